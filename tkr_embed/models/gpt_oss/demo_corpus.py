"""The synthetic conversations the demo model is trained on, and the held-out ones its tests ask.

Each `Dialogue` is an OpenAI chat request (messages, tools, tool_choice, reasoning_effort: what a client
sends) and the assistant's reply as harmony messages (`Turn`s). The training script renders the request
with the server's own renderer, so training sees exactly the prompts the server builds.

Skills: arithmetic (+ and - on 0-99, one digit times 0-99) reasoned digit by digit in the analysis
channel, the same answer as JSON, a `get_weather(city)` call (tool_choice auto, required or named), the
answer from a tool result, a greeting and a polite refusal for anything else.

"train" and "test" never meet: the test split uses its own phrasings, its own seeds and only the
operand pairs `is_held_out` sets aside (training never sees them). Plain Python, no tokenizer.
"""

from __future__ import annotations

import json
import random
import zlib
from dataclasses import dataclass, field
from typing import Literal

Split = Literal["train", "test"]
Skill = Literal["arithmetic", "json", "weather_call", "weather_answer", "weather_no_tool", "greeting", "other"]

SKILLS_SUMMARY = (
    "adds and subtracts numbers from 0 to 99 and multiplies a one-digit number by one from 0 to 99, reasoning "
    "digit by digit; answers as JSON when asked; calls get_weather(city) for a city's weather and answers from "
    "the tool's result; says who it is when greeted; answers anything else with a short apology"
)

CITIES = (
    "Paris", "London", "Berlin", "Madrid", "Rome", "Lisbon", "Vienna", "Prague", "Warsaw", "Dublin",
    "Oslo", "Stockholm", "Helsinki", "Athens", "Cairo", "Nairobi", "Lagos", "Tokyo", "Seoul", "Beijing",
    "Delhi", "Mumbai", "Bangkok", "Sydney", "Toronto", "Chicago", "Boston", "Denver", "Lima", "Santiago",
    "New York", "San Francisco", "Los Angeles", "Mexico City", "Buenos Aires", "Cape Town", "Hong Kong",
    "Rio de Janeiro",
)  # fmt: skip
CONDITIONS = ("sunny", "cloudy", "rainy", "windy", "snowy", "foggy", "stormy", "clear")

GREETING_REPLY = (
    "Hello! I am the tkr-embed demo model, a tiny gpt-oss trained to show the whole loop. I can add, subtract "
    "and multiply small numbers (I reason first), call get_weather for a city and answer from its result, "
    "and answer as JSON when you ask."
)
OTHER_REPLY = (
    "I am a tiny demo model, so I cannot help with that. I can do small sums like 17 + 25, check the weather "
    "with the get_weather tool, and answer as JSON."
)
NO_TOOL_REPLY = "I am a tiny demo model: to check the weather, declare the get_weather tool and ask me again."

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "The city name"}},
            "required": ["city"],
        },
    },
}
_TOOL_DESCRIPTIONS = ("Get the current weather in a city", "Look up the weather for a city", None)

# Operators as users write them, per operation (symbol forms first).
_OPERATORS = {
    "+": ("+", "plus"),
    "-": ("-", "minus"),
    "*": ("*", "x", "times", "×"),
}

_PHRASINGS: dict[Split, dict[str, tuple[str, ...]]] = {
    "train": {
        "arithmetic": (
            "What is {a} {op} {b}?",
            "Compute {a} {op} {b}.",
            "{a} {op} {b} = ?",
            "Calculate {a}{op}{b}",
            "What's {a} {op} {b}?",
            "How much is {a} {op} {b}?",
            "Please work out {a} {op} {b}.",
            "{a}{op}{b}",
            "what is {a} {op} {b}",
            "Quick question: {a} {op} {b}?",
        ),
        # Requests of several lengths and shapes, so the model finds the operands and the city wherever they sit
        # rather than at a fixed distance from the end of the message.
        "json": (
            " Answer as JSON.",
            " Reply in JSON.",
            " Respond with a JSON object.",
            " as JSON please",
            " I want the result as a JSON object, please.",
            " JSON only.",
            " Put the answer in JSON.",
            " Please reply with JSON and nothing else.",
            # Made-up words ({w}) beside "JSON": a request in words the model never learnt still asks for JSON.
            " {w} JSON.",
            " {w} {w} JSON.",
            " {w} as JSON.",
            " {w} the answer in JSON, {w}.",
        ),
        "weather": (
            "What's the weather in {city}?",
            "How is the weather in {city} today?",
            "Weather in {city}?",
            "Is it raining in {city}?",
            "Tell me the weather for {city}.",
            "what is the weather in {city}",
            "Check the weather in {city}, please.",
            "{city} weather?",
            "{city}, how is the weather today?",
            "In {city}, is it raining?",
            "I am flying to {city} tomorrow. What is the weather there?",
            "weather {city}",
        ),
        "greeting": (
            "Hello",
            "Hi",
            "Hey there",
            "Good morning",
            "Good afternoon",
            "Good day",
            "Hello, who are you?",
            "Hi! What can you do?",
            "hey",
            "Greetings!",
            "Hi, what are you?",
        ),
    },
    "test": {
        "arithmetic": (
            "Can you tell me {a} {op} {b}?",
            "Solve {a} {op} {b}.",
            "What do you get for {a} {op} {b}?",
            "I need {a} {op} {b}.",
            "Work out {a} {op} {b} for me.",
        ),
        "json": (" Give the answer as JSON.", " Return JSON.", " Format the answer as JSON."),
        "weather": (
            "What's the weather like in {city}?",
            "Can you check the weather in {city}?",
            "How's the weather in {city} right now?",
            "{city}: what is the weather?",
        ),
        "greeting": ("Hello there", "Hi, who am I talking to?", "Good evening", "Hey!"),
    },
}
_OTHER_QUESTIONS = {
    "train": ("Tell me about {w}.", "What is {w}?", "{w} {w}?", "Can you {w} the {w}?", "{w}", "Why is {w} {w}?"),
    "test": ("Write a poem about {w}.", "Who invented the {w}?", "Explain {w} to me.", "{w} or {w}?"),
}
_SYLLABLES = ("bra", "ko", "vel", "tri", "sum", "na", "gor", "phy", "lex", "mo", "zan", "qui", "dro", "el", "ust")


@dataclass(frozen=True)
class Turn:
    """One assistant message: on `channel` ("analysis", "final", or "commentary" to `recipient`).

    `digitwise`: every digit of `text` is its own token (the reasoning works digit by digit), instead of
    the tokenizer's runs of up to three digits. The detokenised text is the same.
    """

    channel: str
    text: str
    recipient: str | None = None
    digitwise: bool = False


@dataclass
class Dialogue:
    """A chat request (`request`: the OpenAI body fields) and the reply the model should write.

    `expected` is what a correct reply carries: the answer's digits, the called city, or the tool result's
    temperature and conditions.
    """

    skill: Skill
    request: dict
    reply: list[Turn]
    expected: dict = field(default_factory=dict)


def is_held_out(op: str, a: int, b: int) -> bool:
    """About one operand pair in ten, never trained on: the test split asks only these.

    A hash of the whole pair: a rule of the ones digits alone (any sum of multiples mod 10) would set aside whole
    digit facts, every pair whose ones are 7 and 9 say, and the model would never see the step `17-9=8` it needs."""
    return zlib.crc32(f"{op}{a},{b}".encode()) % 10 == 3


def arithmetic_reasoning(op: str, a: int, b: int, effort: str) -> tuple[str, int]:
    """The analysis text for `a op b` (digit by digit, longer at higher effort) and the answer."""
    if op == "+":
        ones, carry = (a % 10 + b % 10) % 10, (a % 10 + b % 10) // 10
        tens = a // 10 + b // 10 + carry
        steps = [
            f"Ones: {a % 10}+{b % 10}={a % 10 + b % 10}, write {ones}, carry {carry}.",
            f"Tens: {a // 10}+{b // 10}+{carry}={tens}.",
        ]
        verb, answer = "add", a + b
    elif op == "-":
        borrow = 1 if a % 10 < b % 10 else 0
        top = a % 10 + 10 * borrow
        ones, tens = top - b % 10, a // 10 - b // 10 - borrow
        steps = [
            f"Ones: {top}-{b % 10}={ones}, borrow {borrow}.",
            f"Tens: {a // 10}-{b // 10}-{borrow}={tens}.",
        ]
        verb, answer = "subtract", a - b
    else:
        small, big = (a, b) if a < 10 else (b, a)
        product = small * (big % 10)
        ones, carry = product % 10, product // 10
        high = small * (big // 10)
        tens = high + carry
        steps = [
            f"Ones: {small}*{big % 10}={product}, write {ones}, carry {carry}.",
            f"Tens: {small}*{big // 10}={high}, {high}+{carry}={tens}.",
        ]
        verb, answer = "multiply", a * b
        a, b = small, big
    conclusion = f"Answer: {answer}."
    if effort == "low":
        return " ".join([*steps, conclusion]), answer
    intro = f"We {verb} {a} and {b} digit by digit."
    if effort == "medium":
        return " ".join([intro, *steps, conclusion]), answer
    check = f"Check the ones again: {steps[0]} Check the tens again: {steps[1]}"
    return " ".join(
        [f"The user asks for {a} {op} {b}.", intro, "Start with the ones.", *steps, check, conclusion]
    ), answer


class DialogueMaker:
    """Dialogues of one split from one seed: the same seed gives the same dialogues."""

    def __init__(self, split: Split, seed: int, *, noise: bool = True) -> None:
        self.split = split
        self.noise = noise
        self.rng = random.Random(f"{split}:{seed}")
        self.phrasings = _PHRASINGS[split]

    # -- pieces --------------------------------------------------------------------------------------
    def _effort(self) -> str | None:
        return self.rng.choice(("low", "medium", "high", None))

    def _pseudo_word(self) -> str:
        return "".join(self.rng.choice(_SYLLABLES) for _ in range(self.rng.randint(1, 3)))

    def _made_up(self, template: str) -> str:
        """`template` with a made-up word in place of each {w}."""
        return template.replace("{w}", "{}").format(*(self._pseudo_word() for _ in range(template.count("{w}"))))

    def _noise(self, text: str) -> str:
        """Words the model was never taught, around the question (training only; tests bring their own)."""
        if self.split == "test" or not self.noise or self.rng.random() > 0.25:
            return text
        words = " ".join(self._pseudo_word() for _ in range(self.rng.randint(1, 3)))
        return f"{words.capitalize()}, {text}" if self.rng.random() < 0.5 else f"{text} {words}"

    def _json_request(self) -> str:
        """A request for JSON; clean dialogues (noise off) keep to the ones without made-up words."""
        choices = [p for p in self.phrasings["json"] if self.noise or "{w}" not in p]
        template = self.rng.choice(choices)
        return self._made_up(template)

    def _tool(self) -> dict:
        if self.split == "test" or self.rng.random() < 0.6:
            return WEATHER_TOOL
        tool = json.loads(json.dumps(WEATHER_TOOL))
        description = self.rng.choice(_TOOL_DESCRIPTIONS)
        if description is None:
            del tool["function"]["description"]
        else:
            tool["function"]["description"] = description
        return tool

    def _history(self) -> list[dict]:
        """An earlier exchange, sometimes (training only), as a client sends it back."""
        if self.split == "test" or self.rng.random() > 0.15:
            return []
        if self.rng.random() < 0.5:
            return [{"role": "user", "content": "Hello"}, {"role": "assistant", "content": GREETING_REPLY}]
        op, a, b = self._operands()
        question = self.phrasings["arithmetic"][0].format(a=a, op=op, b=b)
        _, answer = arithmetic_reasoning(op, a, b, "low")
        return [{"role": "user", "content": question}, {"role": "assistant", "content": f"The answer is {answer}."}]

    def _system(self) -> list[dict]:
        if self.split == "train" and self.rng.random() < 0.15:
            return [{"role": "system", "content": "You are a helpful assistant."}]
        return []

    def _operands(self) -> tuple[str, int, int]:
        while True:
            op = self.rng.choice("+-*")
            a, b = self.rng.randrange(100), self.rng.randrange(100)
            if op == "-" and a < b:
                a, b = b, a
            if op == "*" and min(a, b) >= 10:
                a = a % 10
                if self.rng.random() < 0.5:
                    a, b = b, a
            if is_held_out(op, a, b) == (self.split == "test"):
                return op, a, b

    def _request(self, messages: list[dict], effort: str | None, **extra) -> dict:
        request = {"messages": [*self._system(), *self._history(), *messages], **extra}
        if effort is not None:
            request["reasoning_effort"] = effort
        return request

    # -- skills --------------------------------------------------------------------------------------
    def arithmetic(
        self, *, as_json: bool = False, effort: str | None = None, with_tools: bool | None = None
    ) -> Dialogue:
        op, a, b = self._operands()
        effort = effort if effort is not None else self._effort()
        word = self.rng.choice(_OPERATORS[op])
        template = self.rng.choice(self.phrasings["arithmetic"])
        if word.isalpha() and "{a}{op}{b}" in template:
            template = template.replace("{a}{op}{b}", "{a} {op} {b}")
        question = template.format(a=a, op=word, b=b)
        if as_json:
            question += self._json_request()
        reasoning, answer = arithmetic_reasoning(op, a, b, effort or "medium")
        final = json.dumps({"answer": answer}) if as_json else f"The answer is {answer}."
        if with_tools is None:
            with_tools = self.rng.random() < 0.2
        extra = {"tools": [self._tool()]} if with_tools else {}
        return Dialogue(
            "json" if as_json else "arithmetic",
            self._request([{"role": "user", "content": self._noise(question)}], effort, **extra),
            [Turn("analysis", reasoning, digitwise=True), Turn("final", final, digitwise=True)],
            {"answer": answer, "op": op, "a": a, "b": b},
        )

    def _weather_question(self) -> tuple[str, str]:
        city = self.rng.choice(CITIES)
        return city, self.rng.choice(self.phrasings["weather"]).format(city=city)

    def weather_call(self, tool_choice: str | None = None) -> Dialogue:
        city, question = self._weather_question()
        if tool_choice is None:
            tool_choice = self.rng.choice(("auto", "auto", "omitted", "required", "named"))
        extra: dict = {"tools": [self._tool()]}
        if tool_choice == "named":
            extra["tool_choice"] = {"type": "function", "function": {"name": "get_weather"}}
        elif tool_choice != "omitted":
            extra["tool_choice"] = tool_choice
        call = Turn("commentary", json.dumps({"city": city}), recipient="functions.get_weather")
        reply = [call]
        if tool_choice in ("auto", "omitted"):
            reply = [Turn("analysis", f"The user asks about the weather in {city}. I will call get_weather."), call]
        effort = self._effort()
        messages = [{"role": "user", "content": self._noise(question)}]
        return Dialogue("weather_call", self._request(messages, effort, **extra), reply, {"city": city})

    def weather_answer(self) -> Dialogue:
        city, question = self._weather_question()
        temperature, conditions = self.rng.randint(-15, 40), self.rng.choice(CONDITIONS)
        call_id = f"call_{self.rng.getrandbits(40):010x}"
        assistant: dict = {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": call_id,
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": json.dumps({"city": city})},
                }
            ],
        }
        if self.split == "train" and self.rng.random() < 0.3:
            assistant["reasoning"] = f"The user asks about the weather in {city}. I will call get_weather."
        result = json.dumps({"city": city, "temperature_c": temperature, "conditions": conditions})
        messages = [
            {"role": "user", "content": question},
            assistant,
            {"role": "tool", "tool_call_id": call_id, "content": result},
        ]
        answer = f"It is {conditions} and {temperature} °C in {city}."
        return Dialogue(
            "weather_answer",
            self._request(messages, self._effort(), tools=[self._tool()]),
            [Turn("final", answer)],
            {"city": city, "temperature_c": temperature, "conditions": conditions},
        )

    def weather_no_tool(self) -> Dialogue:
        city, question = self._weather_question()
        reply = [
            Turn("analysis", "The user asks about the weather, but no tool is declared."),
            Turn("final", NO_TOOL_REPLY),
        ]
        messages = [{"role": "user", "content": question}]
        return Dialogue("weather_no_tool", self._request(messages, self._effort()), reply, {"city": city})

    def greeting(self) -> Dialogue:
        question = self.rng.choice(self.phrasings["greeting"])
        reply = [Turn("analysis", "The user greets me. I introduce myself."), Turn("final", GREETING_REPLY)]
        extra = {"tools": [self._tool()]} if self.rng.random() < 0.2 else {}
        return Dialogue(
            "greeting", self._request([{"role": "user", "content": question}], self._effort(), **extra), reply
        )

    def other(self) -> Dialogue:
        template = self.rng.choice(_OTHER_QUESTIONS[self.split])
        question = self._made_up(template)
        reply = [Turn("analysis", "This is not something I was trained for."), Turn("final", OTHER_REPLY)]
        extra = {"tools": [self._tool()]} if self.rng.random() < 0.2 else {}
        return Dialogue("other", self._request([{"role": "user", "content": question}], self._effort(), **extra), reply)

    def core(self) -> Dialogue:
        """One dialogue of a skill with a fixed vocabulary (what `any` draws, less "anything else")."""
        while True:
            dialogue = self.any()
            if dialogue.skill != "other":
                return dialogue

    def any(self) -> Dialogue:
        """One training dialogue, skills in the training mix."""
        pick = self.rng.random()
        if pick < 0.45:
            return self.arithmetic()
        if pick < 0.55:
            return self.arithmetic(as_json=True)
        if pick < 0.72:
            return self.weather_call()
        if pick < 0.84:
            return self.weather_answer()
        if pick < 0.88:
            return self.weather_no_tool()
        if pick < 0.94:
            return self.greeting()
        return self.other()


def training_dialogues(count: int, seed: int = 0) -> list[Dialogue]:
    maker = DialogueMaker("train", seed)
    return [maker.any() for _ in range(count)]


def user_texts(dialogue: Dialogue) -> list[str]:
    return [m["content"] for m in dialogue.request["messages"] if m["role"] == "user"]
