"""Triton kernels against the plain-torch references on the gpt-oss-20b shape (needs CUDA)."""

from __future__ import annotations

import pytest
import torch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

HEAD_SCALE = 0.125  # 1 / sqrt(64)


@pytest.fixture(scope="module")
def kernels():
    pytest.importorskip("triton")
    from tkr_embed.backends.torch.kernels import mxfp4_moe, paged_attention

    return mxfp4_moe, paged_attention


@pytest.mark.parametrize("num_tokens", [1, 7, 9, 64, 200, 300, 512, 4200])
def test_mxfp4_moe_matches_reference_on_20b_shape(kernels, num_tokens):
    from tkr_embed.backends.torch.kernels.mxfp4_reference import moe_reference
    from tkr_embed.backends.torch.kernels.random_cases import make_moe_case, relative_error

    mxfp4_moe, _ = kernels
    case = make_moe_case(num_tokens, seed=num_tokens)
    out = mxfp4_moe.mxfp4_moe(case.hidden, case.topk_ids, case.topk_weights, case.weights)
    ref = moe_reference(case.hidden, case.topk_ids, case.topk_weights, *case.weights)
    assert out.shape == (num_tokens, 2880) and out.dtype == torch.bfloat16
    assert torch.isfinite(out).all()
    assert relative_error(out, ref) < 2e-2


@pytest.mark.parametrize("num_tokens", [1, 3, 16, 300, 2100, 4200])
def test_mxfp4_moe_matches_reference_on_120b_expert_count(kernels, num_tokens):
    """128 experts (the 120b shape) through every dispatch path: gemv, decode, grouped 64 and 128 rows,
    and the prefill path (experts dequantized a chunk at a time, then grouped GEMMs)."""
    from tkr_embed.backends.torch.kernels.mxfp4_reference import moe_reference
    from tkr_embed.backends.torch.kernels.random_cases import make_moe_case, relative_error

    mxfp4_moe, _ = kernels
    case = make_moe_case(num_tokens, num_experts=128, seed=100 + num_tokens)
    out = mxfp4_moe.mxfp4_moe(case.hidden, case.topk_ids, case.topk_weights, case.weights)
    ref = moe_reference(case.hidden, case.topk_ids, case.topk_weights, *case.weights)
    assert out.shape == (num_tokens, 2880) and torch.isfinite(out).all()
    assert relative_error(out, ref) < 2e-2


@pytest.mark.parametrize(
    "num_tokens, allow_mma",
    [(1, False), (9, False), (24, False), (64, False), (64, True), (128, True), (300, False), (4200, False)],
)
def test_every_dispatch_path_reads_tiled_experts_bit_for_bit(kernels, num_tokens, allow_mma):
    """The model keeps CUDA experts in 16-row tiles (expert_layout): decode, MMA, grouped and prefill kernels
    (the PTX dequantization, not run by the interpreter test) give exactly the untiled results. The
    matrix-vector kernels (up to 16 tokens) load a tile column per thread row, which changes the order in
    which Triton's reduction adds the per-group sums: a few gate_up outputs in 10^4 round to the next bf16
    value, and the down projection carries that on (H100: at most 20 of 368,640 results differ, relative
    error <= 2e-5; a misread byte moves hundreds of results by percents)."""
    from tkr_embed.backends.torch.kernels.expert_layout import tiled_weights
    from tkr_embed.backends.torch.kernels.random_cases import make_moe_case, relative_error

    mxfp4_moe, _ = kernels
    case = make_moe_case(num_tokens, seed=200 + num_tokens)
    tiles = tiled_weights(case.weights)
    plain = mxfp4_moe.mxfp4_moe_partials(
        case.hidden, case.topk_ids, case.topk_weights, case.weights, allow_mma=allow_mma
    )
    out = mxfp4_moe.mxfp4_moe_partials(
        case.hidden, case.topk_ids, case.topk_weights, tiles, allow_mma=allow_mma, tiled=True
    )
    if num_tokens > mxfp4_moe.GEMV_MAX_TOKENS:
        assert torch.equal(out, plain)
    else:
        differing = int((out != plain).sum())
        assert differing <= out.numel() // 5000 and relative_error(out, plain) < 1e-4, differing


@pytest.mark.parametrize("num_tokens, num_experts", [(16, 32), (64, 32), (128, 32), (64, 128)])
def test_mma_moe_matches_reference_and_serves_the_dispatch(kernels, num_tokens, num_experts):
    """The register-operand MMA kernels (20b and 120b expert counts) against the float32 reference; the
    default dispatch takes them only when the caller allows it."""
    from tkr_embed.backends.torch.kernels.mxfp4_moe_mma import default_mma_config, mxfp4_moe_mma_partials
    from tkr_embed.backends.torch.kernels.mxfp4_reference import moe_reference
    from tkr_embed.backends.torch.kernels.random_cases import make_moe_case, relative_error

    mxfp4_moe, _ = kernels
    case = make_moe_case(num_tokens, num_experts=num_experts, seed=200 + num_tokens)
    ref = moe_reference(case.hidden, case.topk_ids, case.topk_weights, *case.weights)
    config = default_mma_config(num_tokens * 4, num_experts)
    partials = mxfp4_moe_mma_partials(case.hidden, case.topk_ids, case.topk_weights, case.weights, config=config)
    assert partials.shape == (num_tokens, 4, 2880) and partials.dtype == torch.bfloat16
    assert relative_error(partials.float().sum(1), ref) < 1e-2
    allowed = mxfp4_moe.mxfp4_moe_partials(case.hidden, case.topk_ids, case.topk_weights, case.weights, allow_mma=True)
    assert torch.equal(allowed, partials)
    other = mxfp4_moe.mxfp4_moe_partials(case.hidden, case.topk_ids, case.topk_weights, case.weights)
    assert not torch.equal(other, partials) and relative_error(other.float().sum(1), ref) < 2e-2


def test_mma_moe_tiles_agree(kernels):
    """Every token block size, row tiling and warp count gives the reference's result, including experts
    with more tokens than a block (40 tokens over 4 experts)."""
    from tkr_embed.backends.torch.kernels.mxfp4_moe_mma import MmaTileConfig, mxfp4_moe_mma_partials
    from tkr_embed.backends.torch.kernels.mxfp4_reference import moe_reference
    from tkr_embed.backends.torch.kernels.random_cases import make_moe_case, relative_error

    case = make_moe_case(40, num_experts=4, hidden=576, intermediate=384, seed=5)
    ref = moe_reference(case.hidden, case.topk_ids, case.topk_weights, *case.weights)
    for cfg in (
        MmaTileConfig(),
        MmaTileConfig(8, 128, 64, 4),
        MmaTileConfig(32, 64, 64, 4),
        MmaTileConfig(16, 64, 32, 2),
        MmaTileConfig(16, 256, 64, 4),
    ):
        out = mxfp4_moe_mma_partials(case.hidden, case.topk_ids, case.topk_weights, case.weights, config=cfg)
        assert relative_error(out.float().sum(1), ref) < 1e-2, cfg


def test_prefill_moe_with_all_experts_in_the_scratch_never_waits_for_the_host(kernels):
    """20b: every expert fits the scratch, so the grouped GEMMs take their row offsets on the device; the
    layer can be captured in a CUDA graph (a host sync would fail the capture) and replays the eager result."""
    from tkr_embed.backends.torch.kernels.mxfp4_moe_prefill import mxfp4_moe_prefill_partials
    from tkr_embed.backends.torch.kernels.random_cases import make_moe_case

    case = make_moe_case(2100, seed=21)
    eager = mxfp4_moe_prefill_partials(case.hidden, case.topk_ids, case.topk_weights, case.weights)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = mxfp4_moe_prefill_partials(case.hidden, case.topk_ids, case.topk_weights, case.weights)
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(captured, eager)


def test_mxfp4_moe_every_tile_config_agrees(kernels):
    from tkr_embed.backends.torch.kernels.mxfp4_reference import moe_reference
    from tkr_embed.backends.torch.kernels.random_cases import make_moe_case, relative_error

    mxfp4_moe, _ = kernels
    case = make_moe_case(40, num_experts=8, hidden=512, intermediate=384, seed=3)
    ref = moe_reference(case.hidden, case.topk_ids, case.topk_weights, *case.weights)
    m = mxfp4_moe
    configs = [
        m.GemvConfig(),
        m.GemvConfig(32, 32, 4, 4),
        m.GemvConfig(asm=False),
        m.GemvConfig(f16_products=False),
        m.GemvConfig(asm=False, f16_products=False),
        m.GemvConfig(down_splits=2),
        m.GemvConfig(down_splits=3),
        m.DecodeTileConfig(),
        m.DecodeTileConfig(block_m=32, block_k=64),
        m.DecodeTileConfig(swap_ab=True),
        m.DecodeTileConfig(asm=False),
        m.DecodeTileConfig(dot_scaled=True),
        m.GroupedTileConfig(),
        m.GroupedTileConfig(64, 64, 64, 4),
        m.GroupedTileConfig(32, 64, 128, 4, swap_ab=True),
        m.GroupedTileConfig(asm=False),
        m.GroupedTileConfig(64, 64, 64, 4, dot_scaled=True),
    ]
    for cfg in configs:
        out = mxfp4_moe.mxfp4_moe(case.hidden, case.topk_ids, case.topk_weights, case.weights, config=cfg)
        assert relative_error(out, ref) < 2e-2, cfg


@pytest.mark.parametrize(
    "tokens, num_experts, block_m",
    [(64, 32, 64), (33, 32, 64), (1, 32, 64), (64, 128, 64), (1000, 32, 64), (4000, 128, 16), (4096, 32, 64)],
)
def test_align_kernel_equals_the_torch_alignment_on_cuda(kernels, tokens, num_experts, block_m):
    from tkr_embed.backends.torch.kernels.moe_align import align_pairs_to_experts
    from tkr_embed.backends.torch.kernels.moe_align_kernel import align_pairs_kernel

    gen = torch.Generator().manual_seed(tokens)
    ids = torch.stack([torch.randperm(num_experts, generator=gen)[:4] for _ in range(tokens)]).to(torch.int32).cuda()
    ref = align_pairs_to_experts(ids, num_experts, block_m, use_kernel=False)
    out = align_pairs_kernel(ids, num_experts, block_m)
    assert torch.equal(ref.sorted_pair_ids, out.sorted_pair_ids)
    assert torch.equal(ref.block_expert, out.block_expert)


@pytest.mark.parametrize("window", [0, 128])
def test_decode_attention_matches_reference(kernels, window):
    from tkr_embed.backends.torch.kernels.attention_reference import paged_attention_reference
    from tkr_embed.backends.torch.kernels.random_cases import make_attention_case, relative_error

    _, attention = kernels
    lens = [1, 17, 128, 129, 1000, 3]
    case = make_attention_case(lens, seed=window)
    query = torch.randn(len(lens), 64, 64, device="cuda", dtype=torch.bfloat16)
    starts = torch.arange(len(lens) + 1, dtype=torch.int32, device="cuda")
    ref = paged_attention_reference(
        query, case.kv_cache, starts, case.seq_lens, case.block_tables, case.sinks, window, HEAD_SCALE
    )
    for splits in (None, 1, 8):
        out = attention.paged_decode_attention(
            query, case.kv_cache, case.seq_lens, case.block_tables, case.sinks, window, HEAD_SCALE, num_splits=splits
        )
        assert relative_error(out, ref) < 1e-2, splits


@pytest.mark.parametrize("window", [0, 128])
def test_chunked_prefill_attention_matches_reference(kernels, window):
    from tkr_embed.backends.torch.kernels.attention_reference import paged_attention_reference
    from tkr_embed.backends.torch.kernels.random_cases import make_attention_case, relative_error

    _, attention = kernels
    lens = [300, 77, 1, 520]  # whole prompts, later chunks and a decode mixed in one batch
    q_lens = [300, 40, 1, 200]
    case = make_attention_case(lens, seed=10 + window)
    starts = torch.tensor([0] + torch.tensor(q_lens).cumsum(0).tolist(), dtype=torch.int32, device="cuda")
    query = torch.randn(sum(q_lens), 64, 64, device="cuda", dtype=torch.bfloat16)
    ref = paged_attention_reference(
        query, case.kv_cache, starts, case.seq_lens, case.block_tables, case.sinks, window, HEAD_SCALE
    )
    out = attention.paged_prefill_attention(
        query,
        case.kv_cache,
        starts,
        case.seq_lens,
        case.block_tables,
        case.sinks,
        window,
        HEAD_SCALE,
        max_query_len=max(q_lens),
    )
    assert relative_error(out, ref) < 1e-2


@pytest.mark.parametrize("window", [0, 128])
def test_a_mixed_step_sends_its_leading_decodes_to_the_decode_kernel(window):
    """Decodes first, as the scheduler orders a step (1, 2 and 3 of them: the chunks' tensors start at any row), then
    chunks: the step's attention (decode kernel for the decodes, prefill kernel for the chunks) against the reference."""
    from tkr_embed.backends.torch.attention import build_attention_metadata, paged_attention
    from tkr_embed.backends.torch.kernels.attention_reference import paged_attention_reference
    from tkr_embed.backends.torch.kernels.random_cases import make_attention_case, relative_error

    for decodes in (1, 2, 3):
        lens = [900, 130, 5][:decodes] + [300, 77]
        q_lens = [1] * decodes + [300, 40]
        case = make_attention_case(lens, seed=20 + window + decodes)
        tables = [row[: -(-length // 16)] for row, length in zip(case.block_tables.tolist(), lens, strict=False)]
        metadata = build_attention_metadata(
            [(length - q, q, table) for length, q, table in zip(lens, q_lens, tables, strict=False)], 16, "cuda"
        )
        assert metadata.num_leading_decodes == decodes
        query = torch.randn(sum(q_lens), 64, 64, device="cuda", dtype=torch.bfloat16)
        out = paged_attention(
            query, case.kv_cache, case.sinks, metadata, scale=HEAD_SCALE, sliding_window=window or None
        )
        ref = paged_attention_reference(
            query,
            case.kv_cache,
            metadata.query_start_loc,
            case.seq_lens,
            case.block_tables,
            case.sinks,
            window,
            HEAD_SCALE,
        )
        assert relative_error(out, ref) < 1e-2, decodes


def test_cuda_graph_steps_replay_the_smallest_graph_that_fits():
    from tkr_embed.backends.torch.cuda_graphs import CudaGraphSteps

    weight = torch.randn(32, 16, device="cuda")

    def step(inputs):
        return inputs["x"] @ weight.T + 1.0

    graphs = CudaGraphSteps(step, lambda n: {"x": torch.zeros(n, 16, device="cuda")}, batch_sizes=[1, 4, 8])
    x = torch.randn(3, 16, device="cuda")
    out = graphs.replay(3, x=x)
    assert graphs.padded_size(3) == 4
    assert out.shape == (3, 32)
    torch.testing.assert_close(out, x @ weight.T + 1.0)
    with pytest.raises(ValueError):
        graphs.replay(9, x=torch.randn(9, 16, device="cuda"))
