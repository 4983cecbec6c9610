"""C source of the native optimizer passes (update.one_pass / write_pass), with the noise hash.

:mod:`apt_core.kernels.native` compiles it together with :mod:`apt_core.kernels.c_elementwise`.
Kept as Python strings rather than ``.c`` files: a Flower app bundle (what ``flwr run`` ships
to the deployment engine's SuperNodes) carries only Python and a few text file types, and
the devices there build the same kernels.
"""

SOURCE = r"""/* Native element-wise kernels of APT's integer backend (apt_core/kernels/native.py).

   Each function is one pass over contiguous memory doing what a chain of eager torch ops
   (or one inductor graph) does in apt_core/kernels/update.py, gemm.py and compiled.py, with
   the same float32 operations in the same order. It is compiled with -ffp-contract=off
   and without -ffast-math, so every product and sum is rounded exactly as torch rounds
   it: the results are bit-identical to the Python kernels (the float64 sum of |u| is the
   one reduction whose summation order differs; the tests allow it 1e-9 relative).
   Plain C with a C ABI, called through ctypes: no Python or torch headers. */

#include <math.h>
#include <stddef.h>
#include <stdint.h>

static inline uint32_t mix(uint32_t x) {
    x ^= x >> 16;
    x *= 0x7FEB352Du;
    x ^= x >> 15;
    x *= 0x2C1B3C6Du;
    return x ^ (x >> 16);
}

/* apt_core.kernels.noise.hash_uniform: uniform float32 in [0, 1) on a 2**-24 grid. */
static inline float hash_uniform(int32_t idx, int32_t k1, int32_t k2) {
    uint32_t h = mix(mix((uint32_t)idx ^ (uint32_t)k1) ^ (uint32_t)k2);
    return (float)((h >> 8) & 0xFFFFFFu) * 5.9604644775390625e-08f; /* 2**-24 */
}

/* apt_core.kernels.noise.round_stochastic */
static inline float round_stochastic(float x, float noise) {
    float fl = floorf(x);
    return fl + (noise < x - fl ? 1.0f : 0.0f);
}

/* torch.maximum(torch.minimum(r, hi), lo) for non-NaN r (NaN results are discarded). */
static inline float clampf(float r, float lo, float hi) {
    r = r < hi ? r : hi;
    return r > lo ? r : lo;
}

static inline int32_t old_code(const int8_t *a, const int8_t *b, int64_t i) {
    /* b == NULL: int8 codes; otherwise limbs hi = a, lo = b: 256 * hi + lo + 128 */
    return b ? (int32_t)a[i] * 256 + ((int32_t)b[i] + 128) : (int32_t)a[i];
}

static inline void put_code(int8_t *a, int8_t *b, int64_t i, int32_t code) {
    if (b) {
        a[i] = (int8_t)(code >> 8);
        b[i] = (int8_t)((code & 255) - 128);
    } else {
        a[i] = (int8_t)code;
    }
}

/* Scalar slots of p, as apt_core.kernels.update */
enum { G_SCALE, W_SCALE, LR, MOM, WD, M_SCALE, HALF, F_SCALE, LO, HI, E_SCALE, SKIP };

static inline float grad_at(const void *g, int g_float, int64_t i, float g_scale) {
    float v = g_float ? ((const float *)g)[i] : (float)((const int32_t *)g)[i];
    return v * g_scale;
}

#define LANES 256
#define INLINE static inline __attribute__((always_inline))

/* Per-lane reductions of one_pass, combined once at the end (vectorizable: no reduction
   crosses lanes inside the loop). */
typedef struct {
    double sum[LANES];
    float mw[LANES], md[LANES], mp[LANES];
    int32_t nan[LANES], moved[LANES], big[LANES], changed[LANES];
} lanes_t;

INLINE void one_block(const int8_t *s_hi, const int8_t *s_lo, const void *g, const int g_float,
                      const int has_prev, const int8_t *prev, const float *p,
                      const int32_t *keys, int32_t base, int64_t i0, int64_t len,
                      const int has_wd, const int stochastic, const int limbs, int8_t *o_hi,
                      int8_t *o_lo, int8_t *m_out, lanes_t *L) {
    /* strip-mined into simple loops over stack buffers, each of which gcc vectorizes */
    const float gs = p[G_SCALE], ws = p[W_SCALE], lr = p[LR], mu = p[MOM], wd = p[WD];
    const float ms = p[M_SCALE], half = p[HALF], fs = p[F_SCALE], lo = p[LO], hi = p[HI];
    const float es = p[E_SCALE];
    const int32_t k0 = keys[0], k1 = keys[1], k2 = keys[2], k3 = keys[3];
    int32_t c[LANES], code[LANES];
    float w[LANES], d[LANES], u[LANES];
    const int8_t *sh = s_hi + i0, *sl = s_lo + i0, *pr = prev + i0;
    for (int64_t j = 0; j < len; j++)
        c[j] = limbs ? (int32_t)sh[j] * 256 + ((int32_t)sl[j] + 128) : (int32_t)sh[j];
    if (g_float) {
        const float *gf = (const float *)g + i0;
        for (int64_t j = 0; j < len; j++) d[j] = gf[j] * gs;
    } else {
        const int32_t *gi = (const int32_t *)g + i0;
        for (int64_t j = 0; j < len; j++) d[j] = (float)gi[j] * gs;
    }
    for (int64_t j = 0; j < len; j++) w[j] = (float)c[j] * ws;
    if (has_wd)
        for (int64_t j = 0; j < len; j++) {
            float t = w[j] * wd;
            d[j] = d[j] + t;
        }
    if (has_prev)
        for (int64_t j = 0; j < len; j++) {
            float pv = (float)pr[j] * ms;
            float apv = fabsf(pv);
            L->mp[j] = apv > L->mp[j] ? apv : L->mp[j];
            float t = pv * mu;
            d[j] = t + d[j];
        }
    for (int64_t j = 0; j < len; j++) {
        float uj = d[j] * lr;
        float au = fabsf(uj);
        float wn = w[j] - uj;
        float aw = fabsf(wn), ad = fabsf(d[j]);
        u[j] = uj;
        w[j] = wn;
        L->nan[j] |= (aw != aw) | ((ad != ad) << 1);
        L->mw[j] = aw > L->mw[j] ? aw : L->mw[j];
        L->md[j] = ad > L->md[j] ? ad : L->md[j];
        L->moved[j] += uj != 0.0f;
        L->big[j] += au >= half;
        L->sum[j] += (double)au;
    }
    for (int64_t j = 0; j < len; j++) {
        float x = w[j] * fs;
        int32_t idx = base + (int32_t)(i0 + j);
        float r = stochastic ? round_stochastic(x, hash_uniform(idx, k0, k1)) : nearbyintf(x);
        code[j] = (int32_t)clampf(r, lo, hi);
        L->changed[j] += code[j] != c[j];
    }
    for (int64_t j = 0; j < len; j++) {
        int32_t idx = base + (int32_t)(i0 + j);
        float q = round_stochastic(d[j] * es, hash_uniform(idx, k2, k3));
        c[j] = (int32_t)clampf(q, -127.0f, 127.0f); /* c is free again: the momentum */
    }
    for (int64_t j = 0; j < len; j++) m_out[i0 + j] = (int8_t)c[j];
    if (limbs)
        for (int64_t j = 0; j < len; j++) {
            o_hi[i0 + j] = (int8_t)(code[j] >> 8);
            o_lo[i0 + j] = (int8_t)((code[j] & 255) - 128);
        }
    else
        for (int64_t j = 0; j < len; j++) o_hi[i0 + j] = (int8_t)code[j];
}

INLINE void one_loop(const int8_t *s_hi, const int8_t *s_lo, const void *g, const int g_float,
                     const int has_prev, const int8_t *prev, const float *p,
                     const int32_t *keys, int32_t base,
                     int64_t n, const int has_wd, const int stochastic, const int limbs,
                     int8_t *o_hi, int8_t *o_lo, int8_t *m_out, lanes_t *L) {
    for (int64_t i0 = 0; i0 < n; i0 += LANES) {
        int64_t len = n - i0 < LANES ? n - i0 : LANES;
        one_block(s_hi, s_lo, g, g_float, has_prev, prev, p, keys, base, i0, len, has_wd,
                  stochastic, limbs, o_hi, o_lo, m_out, L);
    }
}

/* update.one_pass over n elements. Codes in (s_hi, s_lo) (s_lo NULL below 9 bits), new
   codes to (o_hi, o_lo), momentum prev (NULL: none) and new momentum m_out.
   floats: [sum|u|, max|w - u|, max|d|, max|prev|]; counts: [#(u != 0), #(|u| >= half),
   #(changed codes)]. Maxima are NaN when any value was. The flags select one of the
   specialised loops (each compiled without branches inside). */
void aptk_one_pass(const int8_t *s_hi, const int8_t *s_lo, const void *g, int g_float,
                   const int8_t *prev, const float *p, const int32_t *keys, int32_t base,
                   int64_t n, int has_wd, int stochastic, int8_t *o_hi, int8_t *o_lo,
                   int8_t *m_out, double *floats, int64_t *counts) {
    static lanes_t zero;
    lanes_t L = zero;
    const int limbs = s_lo != 0;
    const int has_prev = prev != 0;
    int key = (g_float << 4) | (has_prev << 3) | (has_wd << 2) | (stochastic << 1) | limbs;
#define ONE(HP, WD_, ST, LB) \
    one_loop(s_hi, s_lo, g, 0, HP, prev, p, keys, base, n, WD_, ST, LB, o_hi, o_lo, m_out, &L)
    switch (key) {
    case 0: ONE(0, 0, 0, 0); break;
    case 1: ONE(0, 0, 0, 1); break;
    case 2: ONE(0, 0, 1, 0); break;
    case 3: ONE(0, 0, 1, 1); break;
    case 4: ONE(0, 1, 0, 0); break;
    case 5: ONE(0, 1, 0, 1); break;
    case 6: ONE(0, 1, 1, 0); break;
    case 7: ONE(0, 1, 1, 1); break;
    case 8: ONE(1, 0, 0, 0); break;
    case 9: ONE(1, 0, 0, 1); break;
    case 10: ONE(1, 0, 1, 0); break;
    case 11: ONE(1, 0, 1, 1); break;
    case 12: ONE(1, 1, 0, 0); break;
    case 13: ONE(1, 1, 0, 1); break;
    case 14: ONE(1, 1, 1, 0); break;
    case 15: ONE(1, 1, 1, 1); break;
    default: /* float gradients (a non-finite error's float step): rare, not specialised */
        one_loop(s_hi, s_lo, g, 1, has_prev, prev, p, keys, base, n, has_wd, stochastic, limbs,
                 o_hi, o_lo, m_out, &L);
    }
#undef ONE
    double s = 0.0;
    float mw = 0.0f, md = 0.0f, mp = 0.0f;
    int32_t nan = 0;
    int64_t moved = 0, big = 0, changed = 0;
    for (int j = 0; j < LANES; j++) {
        s += L.sum[j];
        mw = L.mw[j] > mw ? L.mw[j] : mw;
        md = L.md[j] > md ? L.md[j] : md;
        mp = L.mp[j] > mp ? L.mp[j] : mp;
        nan |= L.nan[j];
        moved += L.moved[j];
        big += L.big[j];
        changed += L.changed[j];
    }
    floats[0] = s;
    floats[1] = (nan & 1) ? NAN : (double)mw;
    floats[2] = (nan & 2) ? NAN : (double)md;
    floats[3] = (double)mp;
    counts[0] = moved;
    counts[1] = big;
    counts[2] = changed;
}

/* update.write_pass over n elements; returns #(changed codes). m_out NULL: no momentum. */
int64_t aptk_write_pass(const int8_t *s_hi, const int8_t *s_lo, const void *g, int g_float,
                        const int8_t *prev, const float *p, const int32_t *keys, int32_t base,
                        int64_t n, int has_wd, int stochastic, int8_t *o_hi, int8_t *o_lo,
                        int8_t *m_out) {
    const float gs = p[G_SCALE], ws = p[W_SCALE], lr = p[LR], mu = p[MOM], wd = p[WD];
    const float ms = p[M_SCALE], fs = p[F_SCALE], lo = p[LO], hi = p[HI], es = p[E_SCALE];
    const int skip = p[SKIP] > 0.0f;
    int64_t changed = 0;
    for (int64_t i = 0; i < n; i++) {
        int32_t c = old_code(s_hi, s_lo, i);
        float w = (float)c * ws;
        float d = grad_at(g, g_float, i, gs);
        float pv = 0.0f;
        if (has_wd) {
            float t = w * wd;
            d = d + t;
        }
        if (prev) {
            pv = (float)prev[i] * ms;
            float t = pv * mu;
            d = t + d;
        }
        float u = skip ? 0.0f : d * lr;
        if (skip) d = pv; /* prev, or zero without momentum */
        float x = (w - u) * fs;
        int32_t idx = base + (int32_t)i;
        float r = stochastic ? round_stochastic(x, hash_uniform(idx, keys[0], keys[1]))
                             : nearbyintf(x);
        int32_t code = skip ? c : (int32_t)clampf(r, lo, hi);
        changed += code != c;
        put_code(o_hi, o_lo, i, code);
        if (m_out) {
            float q = round_stochastic(d * es, hash_uniform(idx, keys[2], keys[3]));
            m_out[i] = (int8_t)(int32_t)clampf(q, -127.0f, 127.0f);
        }
    }
    return changed;
}

"""
