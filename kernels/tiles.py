"""Program -> tile decoding shared by the elementwise kernels (one tile per
program over [N, C, H*W]).

Two tilings:
- 2-D [BLOCK_C, BLOCK_HW] tiles for any strides (channels_last walks the
  channel axis fastest, NCHW the pixels);
- flat tiles of BLOCK consecutive elements of one sample, for dense NCHW
  tensors: the channel of an element is its offset // H*W. A 7x7 or 14x14
  row is not 16-byte aligned, so 2-D tiles get scalar loads there; a flat
  tile starts at a multiple of BLOCK, so loads and stores are vectors.
``REVERSE`` walks the programs backwards, so a second pass over x meets first
the tiles the previous pass touched last (still in L2).
"""
import triton
import triton.language as tl


@triton.jit
def program_index(REVERSE: tl.constexpr):
    pid = tl.program_id(0)
    if REVERSE:
        pid = tl.num_programs(0) - 1 - pid
    return pid


@triton.jit
def elementwise_tile(pid, C, HW, num_c_blocks, num_hw_blocks, BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr):
    """(n as int64, channels, pixels, channel mask, pixel mask, hw block) of
    one 2-D tile; hw blocks are fastest so that the programs of one sample
    run together."""
    hwb = pid % num_hw_blocks
    ncb = pid // num_hw_blocks
    c = (ncb % num_c_blocks) * BLOCK_C + tl.arange(0, BLOCK_C)
    hw = hwb * BLOCK_HW + tl.arange(0, BLOCK_HW)
    return (ncb // num_c_blocks).to(tl.int64), c, hw, c < C, hw < HW, hwb


@triton.jit
def tile_offsets(n64, c, hw, batch_stride, chan_stride, hw_stride):
    # int64 offsets: N*C*H*W can pass 2**31 elements on large batches.
    return n64 * batch_stride + c.to(tl.int64)[:, None] * chan_stride + hw.to(tl.int64)[None, :] * hw_stride


@triton.jit
def flat_tile(pid, sample_numel, tiles_per_sample, HW: tl.constexpr, BLOCK: tl.constexpr):
    """(n as int64, offsets within the sample, mask, channel of each element,
    first offset) of one flat tile of a dense NCHW sample. Offsets within a
    sample are int32 (the host checks C*H*W < 2**31); H*W is a constexpr so
    that // is a multiply and shift."""
    n64 = (pid // tiles_per_sample).to(tl.int64)
    first = (pid % tiles_per_sample) * BLOCK
    o = first + tl.arange(0, BLOCK)
    return n64, o, o < sample_numel, o // HW, first
