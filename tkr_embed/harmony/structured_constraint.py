"""Structured outputs in a harmony response: the reasoning runs free, the final answer and strict tool calls
follow their JSON grammars.

A response is a series of messages, each a header (`<|channel|>final<|message|>`, `<|channel|>commentary
to=functions.NAME <|constrain|>json<|message|>`, ...) and a body. The constraint spells the headers from the
forms gpt-oss writes (restricted, a few tokens each), lets an analysis or plain commentary body run free, and
holds a JSON body to its grammar until the grammar is complete, then allows only the body's end: `<|return|>`
for the final answer, `<|call|>` for a tool call (both stop the sequence).

Free stretches keep the engine's lookahead on: a free body says its next two tokens are free. That is true but
for one case: after a free body's `<|end|>` only `<|start|>` may come, and a lookahead step planned before the
`<|end|>` was known draws that token free. A model writes `<|start|>` there anyway; should it write anything else,
the state takes it and holds the header to its forms from the next token, `<|start|>` first. The reasoning has a
budget (half of max_tokens, `with_reasoning_budget`): past it the constraint ends the analysis and opens the
final answer, so a schema always gets room to be written. This is a `TokenConstraint`
(tkr_embed/engine/constraints.py): picklable, compared by value, and the engine applies it without knowing harmony.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

from openai_harmony import HarmonyEncoding

from tkr_embed.engine.constraints import FREE_FOREVER, DeferredAdvance, MaskFill, TokenConstraint
from tkr_embed.harmony.special_tokens import CALL, END, RETURN, START
from tkr_embed.harmony.tokenizer import encode_with_specials
from tkr_embed.structured.matcher import GrammarMatcher

ANALYSIS = -1  # a body target: the reasoning, free (within the budget)
FREE = -2  # a body target: free text (a preamble, an unconstrained answer or call)
_SPECIALS = {"<|channel|>", "<|constrain|>", "<|message|>", "<|start|>", "<|end|>"}

Header = tuple[tuple[int, ...], int]  # (the header's token ids, the body it opens: a grammar index or ANALYSIS/FREE)


@dataclass(frozen=True)
class BodyGrammar:
    grammar: str  # llguidance grammar text (tkr_embed.structured.schema)
    end_token: int  # <|return|> for the final answer, <|call|> for a tool call


@dataclass(frozen=True)
class HarmonyConstraint:
    """What the assistant may write after the prompt.

    `first_headers`: the first message's header after the prompt (which ends with `<|start|>assistant` and any
    forced prefix); `first_body` instead when the prompt already wrote the whole header (a named tool choice).
    `next_headers`: every later message's, each starting with `<|start|>`. `budget_exit`: the tokens that end
    the analysis and open the final answer once `reasoning_budget` analysis tokens were written.
    No header is a proper prefix of another (each ends with `<|message|>`).
    """

    first_headers: tuple[Header, ...]
    next_headers: tuple[Header, ...]
    grammars: tuple[BodyGrammar, ...]
    budget_exit: Header
    first_body: int | None = None
    reasoning_budget: int | None = None

    def start(self) -> _HarmonyState:
        return _HarmonyState(self)


def with_reasoning_budget(constraint: TokenConstraint | None, max_tokens: int | None) -> TokenConstraint | None:
    """The constraint with its reasoning budget set from the request's max_tokens (half of it); other constraints
    as they are."""
    if not isinstance(constraint, HarmonyConstraint) or max_tokens is None:
        return constraint
    return dataclasses.replace(constraint, reasoning_budget=max(1, max_tokens // 2))


def structured_constraint(
    encoding: HarmonyEncoding,
    *,
    final_grammar: str | None,
    tool_grammars: Sequence[tuple[str, str | None]],
    forced: str | None = None,
    forced_name: str | None = None,
) -> HarmonyConstraint:
    """The constraint of a response whose final answer follows `final_grammar` (None: free) and whose calls to
    the offered tools (`tool_grammars`: name and arguments grammar, None: free) follow theirs.

    forced: None (any message), "required" (the prompt ends with `<|channel|>commentary to=functions`: the
    model writes `.NAME` and the header's end) or "function" (the prompt holds `forced_name`'s whole header).
    """
    grammars: list[BodyGrammar] = []
    final_body = FREE
    if final_grammar is not None:
        grammars.append(BodyGrammar(final_grammar, RETURN))
        final_body = 0
    tool_bodies: dict[str, int] = {}
    for name, grammar in tool_grammars:
        if grammar is None:
            tool_bodies[name] = FREE
        else:
            grammars.append(BodyGrammar(grammar, CALL))
            tool_bodies[name] = len(grammars) - 1

    def ids(text: str) -> tuple[int, ...]:
        return tuple(encode_with_specials(encoding, text, _SPECIALS))

    tails = (" <|constrain|>json<|message|>", "<|message|>")
    options: list[tuple[str, int]] = [
        ("<|channel|>analysis<|message|>", ANALYSIS),
        ("<|channel|>final<|message|>", final_body),
    ]
    if tool_bodies:
        options.append(("<|channel|>commentary<|message|>", FREE))
        for name, body in tool_bodies.items():
            options.extend((f"<|channel|>commentary to=functions.{name}{tail}", body) for tail in tails)
    next_headers = tuple(sorted({(ids("<|start|>assistant" + text), body) for text, body in options}))
    first_body = None
    if forced == "required":
        first = tuple(sorted({(ids(f".{name}{tail}"), body) for name, body in tool_bodies.items() for tail in tails}))
    elif forced == "function":
        first, first_body = (), tool_bodies[forced_name]
    else:
        first = tuple(sorted({(ids(text), body) for text, body in options}))
    budget_exit = ((END, *ids("<|start|>assistant<|channel|>final<|message|>")), final_body)
    return HarmonyConstraint(first, next_headers, tuple(grammars), budget_exit, first_body)


class _HarmonyState:
    """One sequence's place: in a header (the headers still matching, walked in step), after a free body's
    `<|end|>`, in a free body (analysis counts its tokens), in a grammar body, or done."""

    def __init__(self, constraint: HarmonyConstraint) -> None:
        self._constraint = constraint
        self._headers: tuple[Header, ...] = ()
        self._position = 0
        self._body: int | None = None  # the body being written (None: in a header, after <|end|>, or done)
        self._after_end = False
        self._done = False
        self._matcher: GrammarMatcher | None = None
        self._analysis_tokens = 0
        if constraint.first_body is not None:
            self._open_body(constraint.first_body)
        else:
            self._enter_header(constraint.first_headers, 0)

    def free_tokens_ahead(self) -> int:
        if self._done:
            return FREE_FOREVER
        if self._body == FREE:
            return 2
        if self._body == ANALYSIS:
            budget = self._constraint.reasoning_budget
            return 2 if budget is None else min(2, budget - self._analysis_tokens)
        return 0  # a header, the <|start|> after <|end|>, or a grammar body

    def allowed_tokens(self) -> list[int] | MaskFill:
        if self._matcher is not None:
            return self._matcher.mask_fill()
        if self._after_end:
            return [START]
        return sorted({header[self._position] for header, _ in self._headers})

    def advance(self, token_id: int) -> DeferredAdvance | None:
        """Take the token; in a grammar body, hand back the grammar's part (`GrammarMatcher.advance`)."""
        if self._done:
            return None
        if self._after_end:
            self._after_end = False
            start_written = token_id == START
            self._enter_header(self._constraint.next_headers, 1 if start_written else 0)
            return None
        if self._matcher is not None:
            if token_id == self._matcher.end_token:
                self._finish()
                return None
            return self._matcher.advance(token_id)
        if self._body is not None:  # a free body
            if token_id == END:
                self._body, self._after_end = None, True
            elif self._body == ANALYSIS:
                self._analysis_tokens += 1
                budget = self._constraint.reasoning_budget
                if budget is not None and self._analysis_tokens >= budget:
                    self._enter_header((self._constraint.budget_exit,), 0)
            return None
        position = self._position
        live = tuple(header for header in self._headers if header[0][position] == token_id)
        self._position = position + 1
        complete = [body for tokens, body in live if len(tokens) == self._position]
        if complete:
            self._open_body(complete[0])
        elif live:
            self._headers = live
        else:
            self._finish()  # an id outside every header (never sampled under the mask): free from here on
        return None

    def _enter_header(self, headers: tuple[Header, ...], position: int) -> None:
        self._body, self._matcher = None, None
        self._headers = tuple(header for header in headers if position <= len(header[0]))
        self._position = position

    def _open_body(self, body: int) -> None:
        self._headers, self._body = (), body
        budget = self._constraint.reasoning_budget
        if body == ANALYSIS and budget is not None and self._analysis_tokens >= budget:
            self._enter_header((self._constraint.budget_exit,), 0)  # no reasoning left: straight to the answer
        elif body >= 0:
            grammar = self._constraint.grammars[body]
            self._matcher = GrammarMatcher(grammar.grammar, grammar.end_token)

    def _finish(self) -> None:
        self._done, self._body, self._matcher, self._headers = True, None, None, ()
