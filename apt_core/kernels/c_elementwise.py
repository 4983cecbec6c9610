"""C source of the native element-wise kernels.

amax, quantize, rescale, limb recombination, ReLU and the im2col gathers, compiled after
:mod:`apt_core.kernels.c_update`, whose headers it uses (see there why this is a Python
string).
"""

SOURCE = r"""/* max|x| of n float32 values: NaN when any is NaN, inf when any is infinite.
   Computed on the bits: for IEEE floats |x| orders like its bit pattern without the sign, and every
   NaN pattern is above infinity's, so one integer max (which vectorizes) answers all. */
float aptk_amax(const float *x, int64_t n) {
    const int32_t *bits = (const int32_t *)x;
    int32_t m = 0;
    for (int64_t i = 0; i < n; i++) {
        int32_t a = bits[i] & 0x7FFFFFFF;
        m = a > m ? a : m;
    }
    if (m > 0x7F800000) return NAN;
    float r;
    __builtin_memcpy(&r, &m, sizeof r);
    return r;
}

/* compiled._quantize: min(max(round(x * scale), lo), hi) as int8 (x finite). */
void aptk_quantize(const float *x, int64_t n, float scale, float lo, float hi, int8_t *out) {
    for (int64_t i = 0; i < n; i++) {
        float r = nearbyintf(x[i] * scale);
        r = r > lo ? r : lo;
        r = r < hi ? r : hi;
        out[i] = (int8_t)(int32_t)r;
    }
}

/* compiled._rescale(_bias): out = float(acc) * scale (+ bias[(i / inner) % channels]).
   acc is int32 (acc_float 0) or float32; out may alias acc. bias NULL: none. Each case is
   its own loop so that each vectorizes. */
void aptk_rescale(const void *acc, int acc_float, int64_t n, float scale, const float *bias,
                  int64_t inner, int64_t channels, float *out) {
    const int32_t *ai = (const int32_t *)acc;
    const float *af = (const float *)acc;
    if (!bias) {
        /* through a stack buffer: out usually aliases acc, which would otherwise send gcc's
           vectorized loop to its scalar fallback */
        float tmp[256];
        for (int64_t i0 = 0; i0 < n; i0 += 256) {
            int64_t len = n - i0 < 256 ? n - i0 : 256;
            if (acc_float)
                for (int64_t j = 0; j < len; j++) tmp[j] = af[i0 + j] * scale;
            else
                for (int64_t j = 0; j < len; j++) tmp[j] = (float)ai[i0 + j] * scale;
            for (int64_t j = 0; j < len; j++) out[i0 + j] = tmp[j];
        }
        return;
    }
    int64_t block = inner * channels;
    for (int64_t b0 = 0; b0 < n; b0 += block) {
        if (b0 + block > n) break; /* n is a whole number of blocks; never read past it */
        if (inner == 1 && channels <= 4096) { /* channels innermost: linear, NHWC conv */
            float tmp[4096];
            if (acc_float)
                for (int64_t c = 0; c < channels; c++) {
                    float t = af[b0 + c] * scale;
                    tmp[c] = t + bias[c];
                }
            else
                for (int64_t c = 0; c < channels; c++) {
                    float t = (float)ai[b0 + c] * scale;
                    tmp[c] = t + bias[c];
                }
            for (int64_t c = 0; c < channels; c++) out[b0 + c] = tmp[c];
            continue;
        }
        for (int64_t c = 0; c < channels; c++) {
            const float bc = bias[c];
            int64_t s0 = b0 + c * inner;
            for (int64_t i = s0; i < s0 + inner; i++) {
                float v = acc_float ? af[i] : (float)ai[i];
                float t = v * scale;
                out[i] = t + bc;
            }
        }
    }
}

/* gemm.combine then rescale(_bias) for an (m, n) result of limb products: hi and lo are
   int32 with row strides (in elements); rs the int32 offset sums of the rows (stride
   rs_stride). out[i, j] = (float(lo + 128 * rs[i]) + 256 * float(hi)) * scale (+ bias[j]). */
void aptk_combine(const int32_t *hi, int64_t hi_stride, const int32_t *lo, int64_t lo_stride,
                  const int32_t *rs, int64_t rs_stride, int64_t m, int64_t n, float scale,
                  const float *bias, float *out) {
    for (int64_t i = 0; i < m; i++) {
        const int32_t off = rs[i * rs_stride] * 128;
        const int32_t *h = hi + i * hi_stride, *l = lo + i * lo_stride;
        float *o = out + i * n;
        if (bias)
            for (int64_t j = 0; j < n; j++) {
                float low = (float)(l[j] + off);
                float t = (float)h[j] * 256.0f;
                float v = (low + t) * scale;
                o[j] = v + bias[j];
            }
        else
            for (int64_t j = 0; j < n; j++) {
                float low = (float)(l[j] + off);
                float t = (float)h[j] * 256.0f;
                o[j] = (low + t) * scale;
            }
    }
}

/* torch.relu and the uint8 mask (relu(x) != 0) that activations._ReLUMask saves, on the
   bits: x passes when it is positive (bits > 0) or NaN (NaN passes, as in torch.relu). */
static inline void relu_block(const int32_t *restrict x, int64_t len, int32_t *restrict y,
                              uint8_t *restrict m) {
    for (int64_t j = 0; j < len; j++) {
        int32_t b = x[j];
        int32_t keep = (b > 0) | ((b & 0x7FFFFFFF) > 0x7F800000);
        y[j] = keep ? b : 0;
        m[j] = (uint8_t)keep;
    }
}

void aptk_relu(const int32_t *restrict x, int64_t n, int32_t *restrict y,
               uint8_t *restrict mask) {
    relu_block(x, n, y, mask);
}

/* compiled._relu_grad: g where the mask is set, +0 elsewhere (on the float's bits). */
void aptk_relu_grad(const int32_t *restrict g, const uint8_t *restrict mask, int64_t n,
                    int32_t *restrict out) {
    for (int64_t i = 0; i < n; i++) out[i] = mask[i] ? g[i] : 0;
}

static inline void copy_run(int8_t *dst, const int8_t *src, int64_t len) {
    if ((len & 15) == 0) {
        for (int64_t k = 0; k < len; k += 16) __builtin_memcpy(dst + k, src + k, 16);
    } else {
        __builtin_memcpy(dst, src, (size_t)len);
    }
}

/* Copy a 6-d strided int8 view (innermost dimension contiguous; strides in elements) into
   contiguous dst: the im2col gather of im2col._im2col_chunks, one inlined copy per run of
   channels instead of torch's per-row iterator overhead. */
void aptk_gather6(const int8_t *src, const int64_t *shape, const int64_t *stride, int8_t *dst) {
    const int64_t run = shape[5];
    for (int64_t a = 0; a < shape[0]; a++)
        for (int64_t b = 0; b < shape[1]; b++)
            for (int64_t c = 0; c < shape[2]; c++)
                for (int64_t d = 0; d < shape[3]; d++) {
                    const int8_t *s = src + a * stride[0] + b * stride[1] + c * stride[2] +
                                      d * stride[3];
                    for (int64_t e = 0; e < shape[4]; e++) {
                        copy_run(dst, s + e * stride[4], run);
                        dst += run;
                    }
                }
}

/* im2col rows of a placed NHWC image, for im2col._im2col_chunks. The convolution reads the
   virtual image V[a, y, x, :] = src[a, (y - top) / sy, (x - left) / sx, :] where y - top and
   x - left are non-negative multiples of sy, sx that land inside the (H, W) source, and 0
   elsewhere: padding (top/left may be negative: cropping) and the input gradient's spread by
   the stride, without building V. g holds, in order: images, h0, h1, Wo, H, W, C, the source
   strides of image, row and column (in elements; channels are contiguous), kh, kw, stride
   (2), dilation (2), top, left, sy, sx. Rows run over (image, ho in [h0, h1), wo), columns
   over (i, j, c): dst is contiguous (rows, kh * kw * C). Returns 1 (writing nothing) when
   out of memory for its table of column offsets, else 0. */
int32_t aptk_im2col(const int8_t *src, const int64_t *g, int8_t *dst) {
    const int64_t imgs = g[0], h0 = g[1], h1 = g[2], wo_n = g[3], H = g[4], W = g[5], C = g[6];
    const int64_t s_n = g[7], s_h = g[8], s_w = g[9], kh = g[10], kw = g[11];
    const int64_t st_h = g[12], st_w = g[13], d_h = g[14], d_w = g[15];
    const int64_t top = g[16], left = g[17], sy = g[18], sx = g[19];
    /* source column offset of every (wo, j), or -1 for a zero: the divisions run once */
    int64_t *xoff = (int64_t *)malloc((size_t)(wo_n * kw) * sizeof(int64_t));
    if (!xoff) return 1;
    for (int64_t wo = 0; wo < wo_n; wo++)
        for (int64_t j = 0; j < kw; j++) {
            const int64_t x = wo * st_w + j * d_w - left, xx = x / sx;
            xoff[wo * kw + j] = (x < 0 || xx * sx != x || xx >= W) ? -1 : xx * s_w;
        }
    for (int64_t a = 0; a < imgs; a++)
        for (int64_t ho = h0; ho < h1; ho++)
            for (int64_t wo = 0; wo < wo_n; wo++) {
                const int64_t *xo = xoff + wo * kw;
                for (int64_t i = 0; i < kh; i++) {
                    const int64_t y = ho * st_h + i * d_h - top, yy = y / sy;
                    if (y < 0 || yy * sy != y || yy >= H) {
                        __builtin_memset(dst, 0, (size_t)(kw * C));
                        dst += kw * C;
                        continue;
                    }
                    const int8_t *row = src + a * s_n + yy * s_h;
                    for (int64_t j = 0; j < kw; j++) {
                        if (xo[j] < 0)
                            __builtin_memset(dst, 0, (size_t)C);
                        else
                            copy_run(dst, row + xo[j], C);
                        dst += C;
                    }
                }
            }
    free(xoff);
    return 0;
}

/* Per-channel int32 sums of int8 codes laid out as (A, C, B) with strides sa, sc, sb (in
   elements): the bias gradient of a convolution without torch's int32 copy of the codes.
   Sums wrap modulo 2**32 as torch's int32 sum does. */
void aptk_channel_sums(const int8_t *src, int64_t A, int64_t C, int64_t B, int64_t sa,
                       int64_t sc, int64_t sb, int32_t *out) {
    uint32_t *acc = (uint32_t *)out; /* unsigned: wrap-around is defined */
    for (int64_t c = 0; c < C; c++) acc[c] = 0;
    if (sc == 1 && B == 1) { /* channels innermost */
        for (int64_t a = 0; a < A; a++) {
            const int8_t *p = src + a * sa;
            for (int64_t c = 0; c < C; c++) acc[c] += (uint32_t)(int32_t)p[c];
        }
        return;
    }
    for (int64_t a = 0; a < A; a++)
        for (int64_t c = 0; c < C; c++) {
            const int8_t *p = src + a * sa + c * sc;
            int64_t t = 0;
            for (int64_t b = 0; b < B; b++) t += p[b * sb];
            acc[c] += (uint32_t)t;
        }
}

/* aptk_relu with the mask packed 8 to a byte (bit i % 8 of byte i / 8, in storage order):
   an eighth of the memory the ReLU keeps for backward. bits holds (n + 7) / 8 bytes. Blocks
   of 64 run aptk_relu's vectorized loop into a byte mask, packed 8 bytes (each 0 or 1) at a
   time by one multiplication: byte j lands on bit 56 + j, with no carries below. */
static inline uint8_t pack8(const uint8_t *m) {
    uint64_t v;
    __builtin_memcpy(&v, m, 8);
    return (uint8_t)((v * 0x0102040810204080ULL) >> 56);
}

void aptk_relu_bits(const int32_t *restrict x, int64_t n, int32_t *restrict y,
                    uint8_t *restrict bits) {
    uint8_t m[64];
    int64_t i0 = 0;
    for (; i0 + 64 <= n; i0 += 64) {
        relu_block(x + i0, 64, y + i0, m);
        for (int64_t j = 0; j < 64; j += 8) bits[(i0 + j) >> 3] = pack8(m + j);
    }
    if (i0 < n) {
        const int64_t len = n - i0;
        __builtin_memset(m, 0, sizeof m);
        relu_block(x + i0, len, y + i0, m);
        for (int64_t j = 0; j < len; j += 8) bits[(i0 + j) >> 3] = pack8(m + j);
    }
}

/* aptk_relu_grad with the packed mask of aptk_relu_bits. Blocks of 64: each mask byte is
   spread to 8 bytes of 0 or 1 (bit j of byte j kept, then the byte's high bit set iff it is
   non-zero), and aptk_relu_grad's vectorized select runs on them. */
static inline void spread8(uint8_t byte, uint8_t *m) {
    uint64_t v = (uint64_t)byte * 0x0101010101010101ULL;
    v &= 0x8040201008040201ULL;
    v = ((v + 0x7F7F7F7F7F7F7F7FULL) & 0x8080808080808080ULL) >> 7;
    __builtin_memcpy(m, &v, 8);
}

void aptk_relu_grad_bits(const int32_t *restrict g, const uint8_t *restrict bits, int64_t n,
                         int32_t *restrict out) {
    uint8_t m[64];
    int64_t i0 = 0;
    for (; i0 + 64 <= n; i0 += 64) {
        for (int64_t j = 0; j < 64; j += 8) spread8(bits[(i0 + j) >> 3], m + j);
        for (int64_t j = 0; j < 64; j++) out[i0 + j] = m[j] ? g[i0 + j] : 0;
    }
    if (i0 < n) {
        const int64_t len = n - i0;
        for (int64_t j = 0; j < len; j += 8) spread8(bits[(i0 + j) >> 3], m + j);
        for (int64_t j = 0; j < len; j++) out[i0 + j] = m[j] ? g[i0 + j] : 0;
    }
}

"""
