/* minGRU and minLSTM on the CPU: gates, candidate and scan in one pass over memory each way.
 *
 * Compiled at first use by minrnn_cli/scans/fused/cpu.py with the system C compiler and loaded with ctypes.
 * float32, contiguous tensors. `hidden` is the cell's input projection (B, T, (n_gates + 1) * D) laid out
 * as scans/fused/layout.py says: [gate 1 | ... | candidate] per token. Every cell here has the form
 *
 *     h_t = (1 - z_t) * h_{t-1} + z_t * cand_t               (minGRU; minLSTM normalised: z = i / (f + i))
 *     h_t = f_t * h_{t-1} + i_t * cand_t                     (minLSTM not normalised)
 *
 * with cand = g(c) = c + 0.5 (c >= 0), sigmoid(c) (c < 0) for the log-space cell, else cand = c.
 * The forward reads `hidden` once and writes h once. The backward runs the adjoint recurrence in reverse,
 *     G_t = dL/dh_t + a_{t+1} G_{t+1},
 * recomputing the gates from `hidden`, and writes the gradient of the whole projection once. Parallel over
 * the batch (OpenMP); the channel loop is the vectorised one. exp is a polynomial (Cephes' expf, < 2 ulp)
 * written so the compiler vectorises it; NaN and infinity propagate as they would through torch's ops.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

typedef long long i64;

static inline float exp_approx(float x) {
    /* e^x = 2^n * e^r, |r| <= ln2/2; NaN passes through the comparisons and the polynomial. */
    x = x > 88.37626f ? 88.37626f : x;
    x = x < -87.33654f ? -87.33654f : x;
    float n = floorf(x * 1.44269504088896341f + 0.5f);
    float r = x - n * 0.693359375f + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    union { int32_t bits; float value; } scale = {((int32_t)n + 127) << 23};
    return p * scale.value;
}

static inline float sigmoid(float x) { return 1.0f / (1.0f + exp_approx(-x)); }

/* cand(c) and its slope cand'(c) */
static inline float candidate(float c, float sc, int log_space) {
    return log_space ? (c >= 0.0f ? c + 0.5f : sc) : c;
}
static inline float candidate_slope(float c, float sc, int log_space) {
    return log_space ? (c >= 0.0f ? 1.0f : sc * (1.0f - sc)) : 1.0f;
}

/* The gates of one token at channel d: a (the coefficient of h_{t-1}) and u (the coefficient of the candidate),
 * and the sigmoids s1, s2 of the gate pre-activations (minGRU: z; minLSTM: f, i). */
#define ALWAYS_INLINE static inline __attribute__((always_inline))

ALWAYS_INLINE void gates(const int cell, const int normalize, const float *restrict row, i64 d, i64 D, float *a,
                         float *u, float *s1, float *s2) {
    if (cell == 1) { /* minGRU: [k | c] */
        float z = sigmoid(row[d]);
        *s1 = z;
        *s2 = 0.0f;
        *a = 1.0f - z;
        *u = z;
        return;
    }
    float f = sigmoid(row[d]), i = sigmoid(row[D + d]); /* minLSTM: [forget | input | c] */
    *s1 = f;
    *s2 = i;
    if (normalize) {
        float z = i / (f + i);
        *a = 1.0f - z;
        *u = z;
    } else {
        *a = f;
        *u = i;
    }
}

/* One batch row, forward. Called with constant cell/normalize/log_space, so each combination is compiled
 * (and vectorised over d) on its own. */
ALWAYS_INLINE void forward_row(const int cell, const int normalize, const int log_space,
                               const float *restrict hidden, const float *restrict h0, float *restrict h, i64 T,
                               i64 D) {
    const i64 width = (cell + 1) * D, cand_at = cell * D;
    const float *prev = h0;
    for (i64 t = 0; t < T; t++) {
        const float *restrict row = hidden + t * width;
        float *restrict out = h + t * D;
#pragma omp simd
        for (i64 d = 0; d < D; d++) {
            float a, u, s1, s2;
            gates(cell, normalize, row, d, D, &a, &u, &s1, &s2);
            float c = row[cand_at + d];
            out[d] = a * prev[d] + u * candidate(c, log_space ? sigmoid(c) : 0.0f, log_space);
        }
        prev = out;
    }
}

/* One batch row, backward; G and a_next (D floats each) carry the adjoint and a_{t+1} from t+1 to t. */
ALWAYS_INLINE void backward_row(const int cell, const int normalize, const int log_space,
                                const float *restrict hidden, const float *restrict h0, const float *restrict h,
                                const float *restrict grad_h, float *restrict grad_hidden, float *restrict grad_h0,
                                float *restrict G, float *restrict a_next, i64 T, i64 D) {
    const i64 width = (cell + 1) * D, cand_at = cell * D;
    for (i64 d = 0; d < D; d++) G[d] = a_next[d] = 0.0f;
    for (i64 t = T - 1; t >= 0; t--) {
        const float *restrict row = hidden + t * width;
        const float *restrict dh = grad_h + t * D;
        const float *restrict prev = t > 0 ? h + (t - 1) * D : h0;
        float *restrict grow = grad_hidden + t * width;
#pragma omp simd
        for (i64 d = 0; d < D; d++) {
            float a, u, s1, s2;
            gates(cell, normalize, row, d, D, &a, &u, &s1, &s2);
            float c = row[cand_at + d];
            float sc = log_space ? sigmoid(c) : 0.0f;
            float g = dh[d] + a_next[d] * G[d];
            G[d] = g;
            a_next[d] = a;
            /* dL/da = g * h_{t-1}, dL/du = g * cand, dL/dc = g * u * cand'(c) */
            float da = g * prev[d], du = g * candidate(c, sc, log_space);
            grow[cand_at + d] = g * u * candidate_slope(c, sc, log_space);
            if (cell == 1) { /* a = 1 - z, u = z: dL/dk = (du - da) * z (1 - z) */
                grow[d] = (du - da) * s1 * (1.0f - s1);
            } else if (normalize) { /* z = i / (f + i): dz/df = -i / (f + i)^2, dz/di = f / (f + i)^2 */
                float sum = s1 + s2, dz = (du - da) / (sum * sum);
                grow[d] = -dz * s2 * s1 * (1.0f - s1);
                grow[D + d] = dz * s1 * s2 * (1.0f - s2);
            } else {
                grow[d] = da * s1 * (1.0f - s1);
                grow[D + d] = du * s2 * (1.0f - s2);
            }
        }
    }
    for (i64 d = 0; d < D; d++) grad_h0[d] = a_next[d] * G[d];
}

/* The entry points, over the batch. h0 (B, D) is always given (zeros for none); grad_h0 (B, D) is always
 * written; scratch holds (B, 2, D) floats. */
#define EACH_VARIANT(CALL)                                                                                   \
    switch (cell * 4 + normalize * 2 + log_space) {                                                          \
    case 4: CALL(1, 0, 0); break;                                                                            \
    case 5: CALL(1, 0, 1); break;                                                                            \
    case 6: CALL(1, 1, 0); break;                                                                            \
    case 7: CALL(1, 1, 1); break;                                                                            \
    case 8: CALL(2, 0, 0); break;                                                                            \
    case 9: CALL(2, 0, 1); break;                                                                            \
    case 10: CALL(2, 1, 0); break;                                                                           \
    default: CALL(2, 1, 1); break;                                                                           \
    }

void cell_forward(int cell, int normalize, int log_space, const float *hidden, const float *h0, float *h,
                  i64 B, i64 T, i64 D, int threads) {
    const i64 width = (cell + 1) * D;
#define FORWARD(C, N, L)                                                                                     \
    _Pragma("omp parallel for num_threads(threads) schedule(static)")                                        \
    for (i64 b = 0; b < B; b++)                                                                              \
        forward_row(C, N, L, hidden + b * T * width, h0 + b * D, h + b * T * D, T, D);
    EACH_VARIANT(FORWARD)
}

void cell_backward(int cell, int normalize, int log_space, const float *hidden, const float *h0, const float *h,
                   const float *grad_h, float *grad_hidden, float *grad_h0, float *scratch, i64 B, i64 T, i64 D,
                   int threads) {
    const i64 width = (cell + 1) * D;
#define BACKWARD(C, N, L)                                                                                    \
    _Pragma("omp parallel for num_threads(threads) schedule(static)")                                        \
    for (i64 b = 0; b < B; b++)                                                                              \
        backward_row(C, N, L, hidden + b * T * width, h0 + b * D, h + b * T * D, grad_h + b * T * D,        \
                     grad_hidden + b * T * width, grad_h0 + b * D, scratch + b * 2 * D,                      \
                     scratch + b * 2 * D + D, T, D);
    EACH_VARIANT(BACKWARD)
}
