"""Train the tiny demo model that `tkr-embed serve` answers with when no model is configured.

Two steps, seeded throughout:

    # 1. render the corpus with the server's own renderer (needs openai-harmony: on this machine)
    .venv/bin/python scripts/train_demo_model.py render --out .demo_corpus
    # 2. train on it, write tkr_embed/models/gpt_oss/demo_weights.safetensors (needs torch + transformers; a GPU)
    python scripts/train_demo_model.py train --corpus .demo_corpus --out tkr_embed/models/gpt_oss/demo_weights.safetensors

The model is transformers' `GptOssForCausalLM` (the architecture our engine matches logit for logit) at the size
of `demo_trained.TRAINED_CONFIG`, over a reduced vocabulary: the ids the corpus uses plus one "other" row for
every other id (see `demo_trained`). Unknown words in prompts map to "other", so the model learns to read past
them. The experts are trained quantisation-aware for the second half (fake MXFP4 with a straight-through
gradient, rounded exactly as the exporter rounds), then exported as MXFP4 blocks/scales. Loss is on the
assistant's tokens only. `train` ends by expanding the export to the 201,088-token Hub checkpoint, loading it
through our loader and checking its logits against the trained model, and prints the held-out exact-match rate
(teacher-forced argmax of every reply token, which is what greedy decoding reproduces).

Recorded run (the shipped weights, docs/DEMO_MODEL.md): `render --count 100000`, 119 s on the 2-core CPU;
`train --batch-size 16 --lr 2e-3 --max-seconds 5400 --qat-from 0.7 --eval-count 300 --check-count 30` on that CPU
(2 threads): 10,398 steps in 5,400 s, final training loss 0.0002, held-out loss 0.0004, held-out exact match 0.993
(arithmetic 0.986, every other skill 1.000). On a GPU: `--batch-size 128`, time-boxed.
"""

from __future__ import annotations

import argparse
import math
import random
import re
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CORPUS_FILE = "corpus.npz"
PAD = -1  # in the flat arrays: never a token


# ---------------------------------------------------------------------------------------------- render
def _render_dialogue(dialogue, encoding) -> tuple[list[int], list[int]]:
    """(prompt ids as the server renders the request, the reply ids the model should write after it)."""
    from tkr_embed.harmony.special_tokens import CALL, CHANNEL, END, MESSAGE, RETURN, START
    from tkr_embed.protocol.openai_chat import ChatCompletionRequest
    from tkr_embed.services.chat_prompt import render_request

    rendered = render_request(ChatCompletionRequest(model="demo", **dialogue.request))

    def plain(text: str) -> list[int]:
        return encoding.encode(text, disallowed_special=())

    def digitwise(text: str) -> list[int]:
        return [token for piece in re.split(r"(\d)", text) if piece for token in plain(piece)]

    reply: list[int] = []
    for index, turn in enumerate(dialogue.reply):
        if index > 0:
            reply += [START, *plain("assistant")]
        if turn.recipient is not None:
            header = f"<|channel|>{turn.channel} to={turn.recipient} <|constrain|>json<|message|>"
            reply += encoding.encode(header, allowed_special={"<|channel|>", "<|constrain|>", "<|message|>"})
        else:
            reply += [CHANNEL, *plain(turn.channel), MESSAGE]
        reply += digitwise(turn.text) if turn.digitwise else plain(turn.text)
        last = index == len(dialogue.reply) - 1
        reply.append(CALL if turn.recipient is not None else RETURN if last else END)
    forced = rendered.forced_prefix
    if reply[: len(forced)] != forced:
        raise AssertionError(f"the reply does not begin with the forced prefix {forced}")
    return rendered.token_ids, reply[len(forced) :]


def _pack(pairs: list[tuple[list[int], list[int]]], index: dict[int, int], other: int) -> dict[str, np.ndarray]:
    tokens, lengths, prompt_lengths = [], [], []
    for prompt, reply in pairs:
        tokens.extend(index.get(t, other) for t in prompt + reply)
        lengths.append(len(prompt) + len(reply))
        prompt_lengths.append(len(prompt))
    return {
        "tokens": np.asarray(tokens, dtype=np.int32),
        "lengths": np.asarray(lengths, dtype=np.int32),
        "prompt_lengths": np.asarray(prompt_lengths, dtype=np.int32),
    }


def cmd_render(args: argparse.Namespace) -> None:
    from tkr_embed.harmony.tokenizer import get_encoding
    from tkr_embed.models.gpt_oss.demo_corpus import DialogueMaker, user_texts

    encoding = get_encoding()
    started = time.monotonic()
    # The vocabulary: what clean dialogues (no made-up words, no "anything else" question) use.
    clean = DialogueMaker("train", args.seed + 1, noise=False)
    vocab: set[int] = set()
    for _ in range(args.vocab_dialogues):
        prompt, reply = _render_dialogue(clean.core(), encoding)
        vocab.update(prompt, reply)
    maker = DialogueMaker("train", args.seed)
    train = [maker.any() for _ in range(args.count)]
    test_maker = DialogueMaker("test", args.seed)
    test = [test_maker.any() for _ in range(args.test_count)]
    train_users = {text for d in train for text in user_texts(d)}
    overlap = [text for d in test for text in user_texts(d) if text in train_users]
    if overlap:
        raise AssertionError(f"held-out prompts seen in training: {overlap[:3]}")
    train_pairs = [_render_dialogue(d, encoding) for d in train]
    test_pairs = [_render_dialogue(d, encoding) for d in test]
    for _, reply in train_pairs:
        vocab.update(reply)  # every word the model writes, the apology's too
    vocab_ids = sorted(vocab)
    index = {token: i for i, token in enumerate(vocab_ids)}
    other = len(vocab_ids)
    for _, reply in train_pairs + test_pairs:
        missing = set(reply) - vocab
        if missing:
            raise AssertionError(f"reply tokens outside the vocabulary: {sorted(missing)[:5]}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    train_arrays = _pack(train_pairs, index, other)
    test_arrays = _pack(test_pairs, index, other)
    np.savez_compressed(
        out / CORPUS_FILE,
        vocab_ids=np.asarray(vocab_ids, dtype=np.int32),
        test_skills=np.asarray([d.skill for d in test]),
        **{f"train_{k}": v for k, v in train_arrays.items()},
        **{f"test_{k}": v for k, v in test_arrays.items()},
    )
    others = int((train_arrays["tokens"] == other).sum())
    print(
        f"rendered {len(train)} training and {len(test)} held-out dialogues in {time.monotonic() - started:.0f} s: "
        f"vocabulary {len(vocab_ids)} ids + other, {len(train_arrays['tokens'])} training tokens "
        f"({others} read as other), longest {int(train_arrays['lengths'].max())}"
    )


# ---------------------------------------------------------------------------------------------- train
def _load_split(corpus, split: str) -> list[tuple[np.ndarray, int]]:
    tokens, lengths, prompts = (corpus[f"{split}_{k}"] for k in ("tokens", "lengths", "prompt_lengths"))
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    return [(tokens[s : s + n], int(p)) for s, n, p in zip(starts, lengths, prompts, strict=True)]


def _batch(examples, device):
    """Right-padded inputs, targets (-100 off the reply) for next-token prediction."""
    import torch

    width = max(len(tokens) for tokens, _ in examples) - 1
    inputs = torch.zeros((len(examples), width), dtype=torch.long)
    targets = torch.full((len(examples), width), -100, dtype=torch.long)
    for row, (tokens, prompt_length) in enumerate(examples):
        n = len(tokens) - 1
        inputs[row, :n] = torch.from_numpy(tokens[:-1].astype(np.int64))
        reply_targets = torch.from_numpy(tokens[1:].astype(np.int64))
        reply_targets[: prompt_length - 1] = -100  # predict only what the assistant writes
        targets[row, :n] = reply_targets
    return inputs.to(device), targets.to(device)


def mxfp4_round_trip(weight):
    """The experts' values as the export stores them (`quantize_mxfp4`'s rounding, computed in place of its lookup).

    transformers keeps gate_up_proj [E, H, 2I] and down_proj [E, I, H], the input dimension first; the Hub stores
    [E, out, in] with blocks of 32 inputs, so blocks run along dimension 1 here. Each block's scale is the
    smallest power of two that brings its largest magnitude within 6; values round to the nearest e2m1 value,
    ties to the smaller magnitude (as quantize_mxfp4's argmin does).
    """
    import torch

    from tkr_embed.models.gpt_oss.mxfp4 import FP4_E2M1_VALUES, SCALE_BIAS

    w = weight.detach().float().transpose(1, 2).unflatten(-1, (-1, 32))  # [E, out, in/32, 32]
    amax = w.abs().amax(dim=-1, keepdim=True).clamp_min(torch.finfo(torch.float32).tiny)
    exponents = torch.ceil(torch.log2(amax / 6.0)).clamp(-SCALE_BIAS, 127)
    scaled = w * torch.exp2(-exponents)
    grid = torch.tensor(FP4_E2M1_VALUES[:8], device=w.device)
    codes = torch.bucketize(scaled.abs().contiguous(), (grid[1:] + grid[:-1]) / 2)  # a tie goes to the lower code
    values = torch.sign(scaled) * grid[codes] * torch.exp2(exponents)
    return values.flatten(-2).transpose(1, 2).to(weight.dtype)


def fake_mxfp4():
    """A parametrization: forward sees the MXFP4 values, the gradient goes straight through to the fp32 weight."""
    import torch

    class FakeMxfp4(torch.nn.Module):
        def forward(self, weight):
            return weight + (mxfp4_round_trip(weight) - weight).detach()

    return FakeMxfp4()


def _reference_config(vocab_rows: int):
    from transformers import GptOssConfig as ReferenceConfig

    from tkr_embed.models.gpt_oss.demo_trained import TRAINED_CONFIG

    raw = TRAINED_CONFIG.to_hf_dict()
    raw.pop("quantization_config", None)
    raw["vocab_size"] = vocab_rows
    for special in ("pad_token_id", "bos_token_id", "eos_token_id"):
        raw[special] = None  # full-vocabulary ids; the reduced model never pads, starts or stops by id
    config = ReferenceConfig(**raw)
    config._attn_implementation = "eager"
    return config


def _logits(model, inputs, log_unused: float):
    """Reduced-vocabulary logits; the "other" logit (the last) gains log(#unused): the full softmax's mass."""
    out = model(input_ids=inputs, output_router_logits=True, use_cache=False)
    logits = out.logits.float()
    logits[..., -1] = logits[..., -1] + log_unused
    return logits, out.aux_loss


def _evaluate(model, examples, device, log_unused: float, batch_size: int = 64) -> tuple[float, list[bool]]:
    """(mean reply-token loss, per example: is every reply token the argmax)."""
    import torch

    losses, exact = [], []
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        for start in range(0, len(examples), batch_size):
            inputs, targets = _batch(examples[start : start + batch_size], device)
            logits, _ = _logits(model, inputs, log_unused)
            loss = torch.nn.functional.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
            mask = targets != -100
            losses.append((loss * mask).sum().item() / mask.sum().item())
            exact += (~((logits.argmax(-1) != targets) & mask).any(dim=1)).tolist()
    return sum(losses) / len(losses), exact


def export(model, vocab_ids: np.ndarray, path: Path) -> None:
    """The shipped file: vocab ids, reduced embedding rows, Hub-named tensors, MXFP4 experts."""
    import torch
    from safetensors.torch import save_file

    from tkr_embed.models.gpt_oss.demo_trained import VOCAB_IDS
    from tkr_embed.models.gpt_oss.mxfp4 import quantize_mxfp4

    tensors = {VOCAB_IDS: torch.from_numpy(vocab_ids.astype(np.int32))}
    for name, param in model.named_parameters():
        name = name.replace("parametrizations.", "").replace(".original", "")
        value = param.detach().float().cpu()
        if name.endswith(("experts.gate_up_proj", "experts.down_proj")):
            blocks, scales = quantize_mxfp4(value.transpose(1, 2))  # [E, out, in/32, 16]
            tensors[name + "_blocks"], tensors[name + "_scales"] = blocks, scales
        else:
            tensors[name] = value.to(torch.bfloat16).contiguous()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata={"format": "pt"})


def check_expanded(model, weights: Path, examples, log_unused: float) -> tuple[float, float]:
    """Expand the export to the Hub checkpoint, load it with our loader (CPU, float32) and compare on `examples`:
    (largest gap between its logits and the trained model's over the reply positions, the share of examples whose
    every reply token is its argmax over all 201,088 ids)."""
    import tempfile

    import torch
    from safetensors import safe_open

    from tkr_embed.backends.torch.attention import allocate_kv_cache, build_attention_metadata
    from tkr_embed.models.gpt_oss.demo_trained import VOCAB_IDS, write_trained_checkpoint
    from tkr_embed.models.gpt_oss.loader import load_model

    with tempfile.TemporaryDirectory() as folder:
        write_trained_checkpoint(Path(folder), weights)
        ours = load_model(folder, device="cpu", dtype=torch.float32, verbose=False)
    with safe_open(str(weights), framework="pt") as shipped:
        vocab_ids = shipped.get_tensor(VOCAB_IDS).long()
    unused = next(i for i in range(len(vocab_ids) + 1) if i >= len(vocab_ids) or int(vocab_ids[i]) != i)
    columns = torch.cat([vocab_ids, torch.tensor([unused])])  # reduced row -> full id ("other": an unused id)
    device = next(model.parameters()).device
    block_size, gap, exact = 16, 0.0, 0
    for tokens, prompt_length in examples:
        reduced = torch.from_numpy(tokens.astype(np.int64))
        with torch.no_grad():
            trained, _ = _logits(model, reduced[None, :-1].to(device), 0.0)
            trained = trained[0, prompt_length - 1 :].float().cpu()  # [R, U + 1]
            num_blocks = math.ceil(len(tokens) / block_size)
            kv_caches = allocate_kv_cache(ours.config, num_blocks, block_size, dtype=torch.float32, device="cpu")
            metadata = build_attention_metadata([(0, len(tokens) - 1, list(range(num_blocks)))], block_size, "cpu")
            hidden = ours(columns[reduced[:-1]], torch.arange(len(tokens) - 1), kv_caches, metadata)
            full = ours.compute_logits(hidden[prompt_length - 1 :]).float()  # [R, 201088]
        gap = max(gap, (full[:, columns] - trained).abs().max().item())
        exact += int(torch.equal(full.argmax(-1), columns[reduced[prompt_length:]]))
    return gap, exact / len(examples)


def cmd_train(args: argparse.Namespace) -> None:
    import torch
    from torch.nn.utils import parametrize
    from transformers import GptOssForCausalLM as ReferenceModel

    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    corpus = np.load(Path(args.corpus) / CORPUS_FILE)
    vocab_ids = corpus["vocab_ids"]
    train, test = _load_split(corpus, "train"), _load_split(corpus, "test")
    from tkr_embed.harmony.special_tokens import VOCAB_SIZE

    log_unused = math.log(VOCAB_SIZE - len(vocab_ids))
    model = ReferenceModel(_reference_config(len(vocab_ids) + 1)).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.01)
    rng = np.random.default_rng(args.seed)
    by_length = np.argsort([len(tokens) for tokens, _ in train], kind="stable")
    rank = np.empty_like(by_length)
    rank[by_length] = np.arange(len(by_length))
    started, loss_avg = time.monotonic(), None
    device_name = torch.cuda.get_device_name() if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    print(f"{device_name}: {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters, {len(train)} dialogues")

    def progress(step: int) -> float:
        """How far the schedule is: by steps, or by the clock when the run is time-boxed (--max-seconds)."""
        if args.max_seconds is None:
            return step / args.steps
        return (time.monotonic() - started) / args.max_seconds

    step, quantised = 0, False
    while progress(step) < 1:
        if not quantised and progress(step) >= args.qat_from:
            quantised = True
            print(f"step {step}: the experts train as MXFP4 from here")
            for layer in model.model.layers:
                for name in ("gate_up_proj", "down_proj"):
                    parametrize.register_parametrization(layer.mlp.experts, name, fake_mxfp4())
        warm = min(1.0, (step + 1) / args.warmup)
        decay = 0.5 * (1 + math.cos(math.pi * progress(step)))
        for group in optimizer.param_groups:
            group["lr"] = args.lr * warm * (0.1 + 0.9 * decay)
        # neighbours in length (little padding), around a uniformly drawn example
        center = int(rank[rng.integers(0, len(train))])
        window = by_length[max(0, center - 512) : center + 512]
        picks = rng.choice(window, args.batch_size)
        inputs, targets = _batch([train[i] for i in picks], device)
        # cached: each expert weight is fake-quantised once a step, not at every expert's use
        with parametrize.cached(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            logits, aux = _logits(model, inputs, log_unused)
        loss = torch.nn.functional.cross_entropy(logits.transpose(1, 2), targets)
        total = loss + (0.01 * aux if aux is not None else 0)
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        loss_avg = loss.item() if loss_avg is None else 0.98 * loss_avg + 0.02 * loss.item()
        if step % args.log_every == 0:
            print(
                f"step {step} loss {loss_avg:.4f} lr {optimizer.param_groups[0]['lr']:.2e} {time.monotonic() - started:.0f} s"
            )
        step += 1
    elapsed = time.monotonic() - started
    model.eval()
    test = test[: args.eval_count]
    test_loss, test_exact = _evaluate(model, test, device, log_unused)
    print(f"trained {step} steps in {elapsed:.0f} s; final training loss {loss_avg:.4f}")
    print(f"held-out: loss {test_loss:.4f}, exact match {sum(test_exact) / len(test):.3f}")
    skills = corpus["test_skills"].tolist()[: len(test)]
    for skill in sorted(set(skills)):
        chosen = [exact for exact, s in zip(test_exact, skills, strict=True) if s == skill]
        print(f"  {skill}: exact match {sum(chosen) / len(chosen):.3f} of {len(chosen)}")
    out = Path(args.out)
    export(model, vocab_ids, out)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB)")
    gap, exact = check_expanded(model, out, test[: args.check_count], log_unused)
    print(f"our loader on the expanded checkpoint: max logit gap {gap:.4f}, held-out exact match {exact:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(required=True)
    render = sub.add_parser("render", help="render the corpus (needs openai-harmony)")
    render.add_argument("--out", required=True)
    render.add_argument("--count", type=int, default=60000)
    render.add_argument("--test-count", type=int, default=1000)
    render.add_argument("--vocab-dialogues", type=int, default=20000)
    render.add_argument("--seed", type=int, default=0)
    render.set_defaults(func=cmd_render)
    train = sub.add_parser("train", help="train and export (needs torch and transformers)")
    train.add_argument("--corpus", required=True)
    train.add_argument("--out", required=True)
    train.add_argument("--steps", type=int, default=6000)
    train.add_argument("--batch-size", type=int, default=64)
    train.add_argument("--lr", type=float, default=3e-3)
    train.add_argument("--warmup", type=int, default=200)
    train.add_argument("--qat-from", type=float, default=0.5, help="share of the steps before fake MXFP4 starts")
    train.add_argument(
        "--max-seconds", type=float, default=None, help="time-box the run: the schedule follows the clock, not --steps"
    )
    train.add_argument("--log-every", type=int, default=200)
    train.add_argument("--eval-count", type=int, default=1000, help="held-out dialogues scored after training")
    train.add_argument("--check-count", type=int, default=200, help="held-out dialogues checked through our loader")
    train.add_argument("--seed", type=int, default=0)
    train.set_defaults(func=cmd_train)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
