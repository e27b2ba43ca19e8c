"""Program -> tile decoding shared by the elementwise kernels (one tile per
program over [N, C, H*W])."""
import triton
import triton.language as tl


@triton.jit
def elementwise_tile(pid, C, HW, num_c_blocks, num_hw_blocks, BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr):
    """(n as int64, channels, pixels, channel mask, pixel mask) of one program
    of the elementwise passes (SE/ECA/CBAM scale and dx); hw blocks are
    fastest so that the programs of one sample run together."""
    hwb = pid % num_hw_blocks
    ncb = pid // num_hw_blocks
    c = (ncb % num_c_blocks) * BLOCK_C + tl.arange(0, BLOCK_C)
    hw = hwb * BLOCK_HW + tl.arange(0, BLOCK_HW)
    return (ncb // num_c_blocks).to(tl.int64), c, hw, c < C, hw < HW


@triton.jit
def tile_offsets(n64, c, hw, batch_stride, chan_stride, hw_stride):
    # int64 offsets: N*C*H*W can pass 2**31 elements on large batches.
    return n64 * batch_stride + c.to(tl.int64)[:, None] * chan_stride + hw.to(tl.int64)[None, :] * hw_stride
