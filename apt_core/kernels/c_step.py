"""C source of one whole optimizer step (``aptk_step``): every layer's passes and decisions.

Appended by :mod:`apt_core.kernels.native` after :mod:`apt_core.kernels.c_update`, whose
``aptk_one_pass`` and ``aptk_write_pass`` it calls; :func:`apt_core.kernels.native_update.step`
is its wrapper and :func:`apt_core.kernels.fused_sgd.fused_step` the Python it replaces. A
Python string for the reason ``c_update.py`` gives.
"""

SOURCE = r"""
#include <stdlib.h>
#include <string.h>

/* apt_core.quant.choose_exponent */
static int choose_exponent_c(double max_abs, int bits) {
    if (!isfinite(max_abs) || max_abs <= 0.0) return bits - 1;
    double qmax = (double)((1 << (bits - 1)) - 1);
    int f = (int)floor(log2(qmax) - log2(max_abs));
    while (ldexp(max_abs, f) > qmax) f -= 1;
    while (ldexp(max_abs, f + 1) <= qmax) f += 1;
    return f;
}

/* fused_sgd._fit: the exponent that holds amax at bits, and the shifts it took */
static int fit_c(double amax, int bits, int f, int *shifts) {
    double hi = (double)((1 << (bits - 1)) - 1);
    int s = 0;
    while (amax * ldexp(1.0, f) > hi + 0.5 && s < 64) {
        f -= 1;
        s += 1;
    }
    *shifts = s;
    return f;
}

#define MAX_EXPONENT_C 120 /* apt_core.quant.MAX_EXPONENT */
enum { SP_HI, SP_LO, SP_G, SP_OHI, SP_OLO, SLOT_PTRS };
enum { SI_N, SI_BASE, SI_LAYER, SI_BITS, SI_F, SI_GEXP, SI_GFLOAT, SI_INDEX, SLOT_INTS };
enum { SR_F, SR_E, SR_SHIFTS, SR_CHANGED, SR_SKIP, SLOT_RES };

/* fused_sgd._params */
static void slot_params(float *p, int g_exp, int f, float lr, float mu, float wd, int m_exp,
                        int bits, int e) {
    for (int k = 0; k < 16; k++) p[k] = 0.0f;
    p[G_SCALE] = (float)ldexp(1.0, -g_exp);
    p[W_SCALE] = (float)ldexp(1.0, -f);
    p[LR] = lr;
    p[MOM] = mu;
    p[WD] = wd;
    p[M_SCALE] = (float)ldexp(1.0, -m_exp);
    p[HALF] = (float)ldexp(1.0, -(f + 1));
    p[F_SCALE] = (float)ldexp(1.0, f);
    p[LO] = (float)(-(1 << (bits - 1)));
    p[HI] = (float)((1 << (bits - 1)) - 1);
    p[E_SCALE] = (float)ldexp(1.0, e);
}

/* fused_sgd.fused_step over n slots, the slots of one layer adjacent (SI_LAYER). Per layer:
   one pass per tensor on guessed decisions (grid kept, momentum exponent of the last step);
   when a guess was wrong the layer is redone with write passes on the exact decisions (a
   non-finite update skips the layer: codes kept, momentum re-stored). The momentum is
   updated in place in mom (NULL: none kept; the slots' offsets SI_BASE index it), the
   exponents in mom_exp; each layer's previous momentum is copied aside first, since a redo
   reads it. New codes go to SP_OHI/SP_OLO. Per slot: floats[4] and counts[3] of its one
   pass, res[SLOT_RES] = (new exponent, momentum exponent, shifts, changed codes as the
   stats count them, skipped). Returns 0, or -1 when scratch memory ran out. */
typedef struct {
    const int8_t *hi, *lo; /* stored codes (lo NULL below 9 bits) */
    const void *g;
    int8_t *o_hi, *o_lo; /* new codes */
    int64_t n, base, index;
    int bits, f, g_exp, g_float, e_guess;
} slot_t;

static slot_t slot_at(const int64_t *ptrs, const int64_t *ints, int64_t s,
                      const int32_t *mom_exp) {
    const int64_t *P = ptrs + s * SLOT_PTRS, *I = ints + s * SLOT_INTS;
    slot_t t;
    t.hi = (const int8_t *)P[SP_HI];
    t.lo = (const int8_t *)P[SP_LO];
    t.g = (const void *)P[SP_G];
    t.o_hi = (int8_t *)P[SP_OHI];
    t.o_lo = (int8_t *)P[SP_OLO];
    t.n = I[SI_N];
    t.base = I[SI_BASE];
    t.index = I[SI_INDEX];
    t.bits = (int)I[SI_BITS];
    t.f = (int)I[SI_F];
    t.g_exp = (int)I[SI_GEXP];
    t.g_float = (int)I[SI_GFLOAT];
    t.e_guess = mom_exp ? mom_exp[t.index] : 7; /* no momentum kept: fused_sgd's 7 */
    return t;
}

/* min(choose_exponent(amax, 8), MAX_EXPONENT): the exponent of the int8 momentum */
static int momentum_exponent(double amax) {
    int e = choose_exponent_c(amax, 8);
    return e > MAX_EXPONENT_C ? MAX_EXPONENT_C : e;
}

int aptk_step(int64_t n_slots, const int64_t *ptrs, const int64_t *ints, double lr_d,
              double mu_d, double wd_d, int has_prev, int stochastic, const int32_t *keys,
              int8_t *mom, int32_t *mom_exp, double *floats, int64_t *counts, int64_t *res) {
    const float lr = (float)lr_d, mu = (float)mu_d, wd = (float)wd_d;
    const int has_wd = wd_d != 0.0, keep = mom != 0;
    if (!keep) mom_exp = 0;
    /* scratch: a layer's previous momentum (a redo reads it), or where unkept momentum goes */
    int64_t scratch_n = 0;
    for (int64_t i = 0, j; i < n_slots; i = j) {
        int64_t total = 0, biggest = 0;
        const int64_t layer = ints[i * SLOT_INTS + SI_LAYER];
        for (j = i; j < n_slots && ints[j * SLOT_INTS + SI_LAYER] == layer; j++) {
            const int64_t len = ints[j * SLOT_INTS + SI_N];
            total += len;
            biggest = len > biggest ? len : biggest;
        }
        const int64_t need = keep ? total : biggest;
        scratch_n = need > scratch_n ? need : scratch_n;
    }
    int8_t *scratch = (int8_t *)malloc((size_t)scratch_n + 1);
    if (!scratch) return -1;
    float p[16];
    for (int64_t i = 0, j; i < n_slots; i = j) {
        const int64_t layer = ints[i * SLOT_INTS + SI_LAYER];
        for (j = i; j < n_slots && ints[j * SLOT_INTS + SI_LAYER] == layer; j++) {}
        int all_ok = 1, skip = 0;
        int64_t at = 0;
        for (int64_t s = i; s < j; s++) {
            const slot_t t = slot_at(ptrs, ints, s, mom_exp);
            const int8_t *prev = 0;
            int8_t *m_out = scratch;
            if (keep) {
                m_out = mom + t.base;
                if (has_prev) {
                    memcpy(scratch + at, m_out, (size_t)t.n);
                    prev = scratch + at;
                }
            }
            at += t.n;
            slot_params(p, t.g_exp, t.f, lr, mu, wd, has_prev ? t.e_guess : 0, t.bits,
                        t.e_guess);
            double *F = floats + s * 4;
            aptk_one_pass(t.hi, t.lo, t.g, t.g_float, prev, p, keys, (int32_t)t.base, t.n,
                          has_wd, stochastic, t.o_hi, t.o_lo, m_out, F, counts + s * 3);
            int e = isfinite(F[2]) ? momentum_exponent(F[2]) : t.e_guess;
            int shifts;
            fit_c(F[1], t.bits, t.f, &shifts);
            all_ok &= isfinite(F[0]) && shifts == 0 && (e == t.e_guess || mu_d == 0.0);
            skip |= !isfinite(F[0]);
            int64_t *R = res + s * SLOT_RES;
            R[SR_F] = t.f;
            R[SR_E] = e;
            R[SR_SHIFTS] = 0;
            R[SR_CHANGED] = counts[s * 3 + 2];
            R[SR_SKIP] = 0;
        }
        if (all_ok) {
            if (keep)
                for (int64_t s = i; s < j; s++)
                    mom_exp[ints[s * SLOT_INTS + SI_INDEX]] = (int32_t)res[s * SLOT_RES + SR_E];
            continue;
        }
        at = 0;
        for (int64_t s = i; s < j; s++) {
            const slot_t t = slot_at(ptrs, ints, s, mom_exp);
            const double *F = floats + s * 4;
            int shifts = 0, f_new = t.f;
            if (!skip) f_new = fit_c(F[1], t.bits, t.f, &shifts);
            int e = momentum_exponent(skip ? F[3] : F[2]);
            slot_params(p, t.g_exp, t.f, lr, mu, wd, has_prev ? t.e_guess : 0, t.bits, e);
            p[F_SCALE] = (float)ldexp(1.0, f_new);
            p[SKIP] = skip ? 1.0f : 0.0f;
            const int8_t *prev = has_prev && keep ? scratch + at : 0;
            at += t.n;
            int64_t changed = aptk_write_pass(t.hi, t.lo, t.g, t.g_float, prev, p, keys,
                                              (int32_t)t.base, t.n, has_wd, stochastic, t.o_hi,
                                              t.o_lo, keep ? mom + t.base : 0);
            if (keep) mom_exp[t.index] = e;
            int64_t *R = res + s * SLOT_RES;
            R[SR_F] = f_new;
            R[SR_E] = e;
            R[SR_SHIFTS] = shifts;
            R[SR_CHANGED] = shifts ? counts[s * 3 + 1] : changed;
            R[SR_SKIP] = skip;
        }
    }
    free(scratch);
    return 0;
}
"""
