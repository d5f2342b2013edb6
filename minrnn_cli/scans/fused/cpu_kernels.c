/* minGRU, minLSTM and Mamba's conv + selective scan on the CPU, each in one pass over memory each way, and the
 * residual block's causal conv and RMSNorm. (The Mamba and block kernels are further down, each with its own
 * description.)
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
#include <stdlib.h>
#ifdef _OPENMP
#include <omp.h>
#endif
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
 * and s1, s2 for the backward: the sigmoids of the gate pre-activations (minGRU: z; minLSTM: f, i), or for
 * the normalised minLSTM the terms of its dz (below). */
#define ALWAYS_INLINE static inline __attribute__((always_inline))

ALWAYS_INLINE void gates(const int cell, const int normalize, const float *restrict row, const float *restrict bias,
                         i64 d, i64 D, float *a, float *u, float *s1, float *s2) {
    if (cell == 1) { /* minGRU: [k | c] */
        float z = sigmoid(row[d] + bias[d]);
        *s1 = z;
        *s2 = 0.0f;
        *a = 1.0f - z;
        *u = z;
        return;
    }
    /* minLSTM: [forget | input | c]. Normalised, z = i / (f + i) = (1/2 + e_f) r with e = exp(-pre-activation) / 2
     * and r = 1 / (1 + e_f + e_i): one division for both gates, 1 - z = (1/2 + e_i) r without the cancellation
     * of 1 - z near 1, and the halves keep the sum finite wherever exp_approx is. s1, s2 then hold e_f r and
     * e_i r, what the backward's dz needs. */
    if (normalize) {
        float e_f = 0.5f * exp_approx(-(row[d] + bias[d])), e_i = 0.5f * exp_approx(-(row[D + d] + bias[D + d]));
        float r = 1.0f / (1.0f + e_f + e_i);
        *s1 = e_f * r;
        *s2 = e_i * r;
        *a = (0.5f + e_i) * r;
        *u = (0.5f + e_f) * r;
        return;
    }
    float f = sigmoid(row[d] + bias[d]), i = sigmoid(row[D + d] + bias[D + d]);
    *s1 = f;
    *s2 = i;
    *a = f;
    *u = i;
}

/* The rows PREFETCH_AHEAD steps ahead of the one being computed are requested from memory while it is: each
 * batch row's walk over time (backward: in reverse) jumps between four or five streams of one row each, which the
 * hardware prefetcher does not follow, and without this the backward ran at a third of the copy bandwidth. */
#define PREFETCH_AHEAD 2
static inline void prefetch_row(const float *row, i64 n, int for_write) {
    for (i64 at = 0; at < n; at += 16) { /* one 64-byte line */
        if (for_write) __builtin_prefetch(row + at, 1, 3);
        else __builtin_prefetch(row + at, 0, 3);
    }
}

/* One batch row, forward. Called with constant cell/normalize/log_space, so each combination is compiled
 * (and vectorised over d) on its own. */
ALWAYS_INLINE void forward_row(const int cell, const int normalize, const int log_space,
                               const float *restrict hidden, const float *restrict bias, const float *restrict h0,
                               float *restrict h, i64 T, i64 D) {
    const i64 width = (cell + 1) * D, cand_at = cell * D;
    const float *prev = h0;
    for (i64 t = 0; t < T; t++) {
        const float *restrict row = hidden + t * width;
        float *restrict out = h + t * D;
        if (t + PREFETCH_AHEAD < T) {
            prefetch_row(hidden + (t + PREFETCH_AHEAD) * width, width, 0);
            prefetch_row(h + (t + PREFETCH_AHEAD) * D, D, 1);
        }
#pragma omp simd
        for (i64 d = 0; d < D; d++) {
            float a, u, s1, s2;
            gates(cell, normalize, row, bias, d, D, &a, &u, &s1, &s2);
            float c = row[cand_at + d] + bias[cand_at + d];
            out[d] = a * prev[d] + u * candidate(c, log_space ? sigmoid(c) : 0.0f, log_space);
        }
        prev = out;
    }
}

/* One batch row, backward; G and a_next (D floats each) carry the adjoint and a_{t+1} from t+1 to t. */
ALWAYS_INLINE void backward_row(const int cell, const int normalize, const int log_space,
                                const float *restrict hidden, const float *restrict bias, const float *restrict h0,
                                const float *restrict h, const float *restrict grad_h, float *restrict grad_hidden,
                                float *restrict grad_bias, float *restrict grad_h0, float *restrict G,
                                float *restrict a_next, i64 T, i64 D) {
    const i64 width = (cell + 1) * D, cand_at = cell * D;
    for (i64 d = 0; d < D; d++) G[d] = a_next[d] = 0.0f;
    for (i64 k = 0; k < width; k++) grad_bias[k] = 0.0f;
    for (i64 t = T - 1; t >= 0; t--) {
        const float *restrict row = hidden + t * width;
        const float *restrict dh = grad_h + t * D;
        const float *restrict prev = t > 0 ? h + (t - 1) * D : h0;
        float *restrict grow = grad_hidden + t * width;
        if (t > PREFETCH_AHEAD) {
            const i64 ahead = t - PREFETCH_AHEAD;
            prefetch_row(hidden + ahead * width, width, 0);
            prefetch_row(grad_h + ahead * D, D, 0);
            prefetch_row(h + (ahead - 1) * D, D, 0);
            prefetch_row(grad_hidden + ahead * width, width, 1);
        }
#pragma omp simd
        for (i64 d = 0; d < D; d++) {
            float a, u, s1, s2;
            gates(cell, normalize, row, bias, d, D, &a, &u, &s1, &s2);
            float c = row[cand_at + d] + bias[cand_at + d];
            float sc = log_space ? sigmoid(c) : 0.0f;
            float g = dh[d] + a_next[d] * G[d];
            G[d] = g;
            a_next[d] = a;
            /* dL/da = g * h_{t-1}, dL/du = g * cand, dL/dc = g * u * cand'(c) */
            float da = g * prev[d], du = g * candidate(c, sc, log_space);
            float dc = g * u * candidate_slope(c, sc, log_space), dk1, dk2 = 0.0f;
            if (cell == 1) { /* a = 1 - z, u = z: dL/dk = (du - da) * z (1 - z) */
                dk1 = (du - da) * s1 * (1.0f - s1);
            } else if (normalize) { /* z = (1/2 + e_f) r: dz/dpre_f = -e_f (1/2 + e_i) r^2 = -s1 a,
                                     * dz/dpre_i = e_i (1/2 + e_f) r^2 = s2 u */
                float dz = du - da;
                dk1 = -dz * s1 * a;
                dk2 = dz * s2 * u;
            } else {
                dk1 = da * s1 * (1.0f - s1);
                dk2 = du * s2 * (1.0f - s2);
            }
            /* the bias's gradient is the pre-activation's, summed over time (and over the batch, by the caller) */
            grow[d] = dk1;
            grad_bias[d] += dk1;
            if (cell == 2) {
                grow[D + d] = dk2;
                grad_bias[D + d] += dk2;
            }
            grow[cand_at + d] = dc;
            grad_bias[cand_at + d] += dc;
        }
    }
    for (i64 d = 0; d < D; d++) grad_h0[d] = a_next[d] * G[d];
}

/* The entry points, over the batch. `hidden` is the projection without its bias, `bias` ((n_gates + 1) * D) is
 * added as each pre-activation is read: the matmul then writes the projection once, instead of copying the
 * bias into it first, and the backward sums the bias's gradient as it writes the projection's, instead of a
 * pass over it afterwards. bias and h0 (B, D) are always given (zeros for none); grad_bias_rows (B, width)
 * gets each batch row's sum, grad_h0 (B, D) is always written; scratch holds (B, 2, D) floats. */
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

void cell_forward(int cell, int normalize, int log_space, const float *hidden, const float *bias, const float *h0,
                  float *h, i64 B, i64 T, i64 D, int threads) {
    const i64 width = (cell + 1) * D;
#define FORWARD(C, N, L)                                                                                     \
    _Pragma("omp parallel for num_threads(threads) schedule(static)")                                        \
    for (i64 b = 0; b < B; b++)                                                                              \
        forward_row(C, N, L, hidden + b * T * width, bias, h0 + b * D, h + b * T * D, T, D);
    EACH_VARIANT(FORWARD)
}

void cell_backward(int cell, int normalize, int log_space, const float *hidden, const float *bias, const float *h0,
                   const float *h, const float *grad_h, float *grad_hidden, float *grad_bias_rows, float *grad_h0,
                   float *scratch, i64 B, i64 T, i64 D, int threads) {
    const i64 width = (cell + 1) * D;
#define BACKWARD(C, N, L)                                                                                    \
    _Pragma("omp parallel for num_threads(threads) schedule(static)")                                        \
    for (i64 b = 0; b < B; b++)                                                                              \
        backward_row(C, N, L, hidden + b * T * width, bias, h0 + b * D, h + b * T * D, grad_h + b * T * D,  \
                     grad_hidden + b * T * width, grad_bias_rows + b * width, grad_h0 + b * D,               \
                     scratch + b * 2 * D, scratch + b * 2 * D + D, T, D);
    EACH_VARIANT(BACKWARD)
}

/* ---- Mamba's selective scan (S6) -------------------------------------------------------------------------
 *
 *     h_t = exp(delta_t A) * h_{t-1} + delta_t u_t B_t,    y_t = (C_t . h_t + D u_t) * silu(z_t)
 *
 * per channel d a state of N, A (D, N). u, delta, y: (B, T, D) contiguous; B_t, C_t: N floats at a row stride of
 * `bc_stride` per step (views into x_proj's output); z: D floats at a row stride of `z_stride` (a view into
 * in_proj's output), or NULL; D_skip (D) or NULL; h0, h_last, grad_h0: (B, D, N); starts: (B, chunks, N, D), the
 * state before each chunk of `chunk_len` steps, written forward and read backward, where the states inside a
 * chunk are recomputed. One thread owns a batch row. Its steps go by tiles: first every per-step value that is
 * not a state (softplus(delta), delta u, D u, silu(z)) for the tile's rows, whole rows at a time; then the scan
 * of each block of LANES channels over the tile, their N states each kept in an (N, LANES) block that stays in
 * L1, so no (B, T, D, N) tensor is ever written. Computing the per-step values apart took their exp and
 * division off each step's path, and reading whole rows replaced a walk down one 64-byte column of every
 * tensor per block: the forward took 0.65-0.7x its previous time, the backward 0.6-0.75x (B=8, T=512,
 * D=256, N=16, one thread; interleaved A/B in one process). With use_softplus, `delta` holds its
 * pre-activation: the kernels take delta = softplus(pre) and return dL/dpre in grad_delta. */
#define LANES 16
#define TILE 16 /* steps of the forward's tile */

static inline float silu_gate(float z) { return z * sigmoid(z); }

/* This thread's place in a per-thread accumulator (0 without OpenMP). */
static inline int thread_index(void) {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

/* softplus(x) = max(x, 0) + log(1 + e), e = exp(-|x|) in (0, 1]: log(1 + e) = 2 atanh(s), s = e / (2 + e) <= 1/3,
 * by its series to s^13 (relative error < 1e-8). Matches torch's softplus (threshold 20) to float32 rounding. */
static inline float softplus(float x) {
    float e = exp_approx(-fabsf(x)), s = e / (2.0f + e), s2 = s * s;
    float p = 1.0f / 13.0f;
    p = p * s2 + 1.0f / 11.0f;
    p = p * s2 + 1.0f / 9.0f;
    p = p * s2 + 1.0f / 7.0f;
    p = p * s2 + 1.0f / 5.0f;
    p = p * s2 + 1.0f / 3.0f;
    p = p * s2 + 1.0f;
    return (x > 0.0f ? x : 0.0f) + 2.0f * s * p;
}

/* Channels in blocks of LANES; rows of the per-step arrays are `width` = blocks * LANES floats, the channels
 * past D zero (a zero lane's delta, input and A keep its state at zero). */
static inline i64 lane_blocks(i64 D) { return (D + LANES - 1) / LANES; }

/* One step's row of D floats into `width` floats, zero past D. */
ALWAYS_INLINE void load_row(float *restrict dst, const float *restrict src, i64 D, i64 width) {
    for (i64 d = 0; d < D; d++) dst[d] = src[d];
    for (i64 d = D; d < width; d++) dst[d] = 0.0f;
}

/* The forward's per-step rows for `len` steps from t0: dl = delta, du = delta u, acc = D u (the scan adds
 * C . h), gate = silu(z) (1 without z); zero past D. */
static void forward_rows(const float *restrict u, const float *restrict delta, const float *restrict z, i64 z_stride,
                         const float *restrict skip, i64 t0, i64 len, i64 D, i64 width, int use_softplus,
                         float *restrict dl, float *restrict du, float *restrict acc, float *restrict gate) {
    for (i64 s = 0; s < len; s++) {
        const i64 t = t0 + s, at = s * width;
        const float *restrict ut = u + t * D, *restrict pre = delta + t * D, *restrict zt = z ? z + t * z_stride : 0;
#pragma omp simd
        for (i64 d = 0; d < D; d++) {
            dl[at + d] = use_softplus ? softplus(pre[d]) : pre[d];
            du[at + d] = dl[at + d] * ut[d];
            acc[at + d] = skip ? skip[d] * ut[d] : 0.0f;
            gate[at + d] = zt ? silu_gate(zt[d]) : 1.0f;
        }
        for (i64 d = D; d < width; d++) dl[at + d] = du[at + d] = acc[at + d] = gate[at + d] = 0.0f;
    }
}

/* One block of LANES channels over `len` steps: h (N, LANES) carried in and out, acc (rows of `width`) += C . h. */
ALWAYS_INLINE void scan_block(float *restrict h, const float *restrict a, const float *restrict dl,
                              const float *restrict du, float *restrict acc, const float *restrict Bm,
                              const float *restrict Cm, i64 bc_stride, i64 len, i64 N, i64 width) {
    for (i64 s = 0; s < len; s++) {
        const float *restrict dl_s = dl + s * width, *restrict du_s = du + s * width;
        const float *restrict b_s = Bm + s * bc_stride, *restrict c_s = Cm + s * bc_stride;
        float sum[LANES];
        for (i64 j = 0; j < LANES; j++) sum[j] = acc[s * width + j];
        for (i64 n = 0; n < N; n++) {
            const float bn = b_s[n], cn = c_s[n];
#pragma omp simd
            for (i64 j = 0; j < LANES; j++) {
                float hv = exp_approx(dl_s[j] * a[n * LANES + j]) * h[n * LANES + j] + du_s[j] * bn;
                h[n * LANES + j] = hv;
                sum[j] += cn * hv;
            }
        }
        for (i64 j = 0; j < LANES; j++) acc[s * width + j] = sum[j];
    }
}

/* A (D, N) matrix of one batch row (A, or a state h0) into lanes (blocks, N, LANES): m[(k * N + n) * LANES + j] =
 * M[k * LANES + j, n], zero past D and for NULL (the zero state); and a state back out of them. */
static void into_lanes(float *restrict m, const float *restrict M, i64 D, i64 N) {
    for (i64 k = 0; k < lane_blocks(D); k++)
        for (i64 n = 0; n < N; n++)
            for (i64 j = 0; j < LANES; j++) {
                const i64 d = k * LANES + j;
                m[(k * N + n) * LANES + j] = M && d < D ? M[d * N + n] : 0.0f;
            }
}
static void state_from_lanes(float *restrict state, const float *restrict h, i64 D, i64 N) {
    for (i64 d = 0; d < D; d++)
        for (i64 n = 0; n < N; n++) state[d * N + n] = h[((d / LANES) * N + n) * LANES + d % LANES];
}

/* The state before step t into starts (N, D) */
static void store_start(float *restrict start, const float *restrict h, i64 D, i64 N) {
    for (i64 n = 0; n < N; n++)
        for (i64 d = 0; d < D; d++) start[n * D + d] = h[((d / LANES) * N + n) * LANES + d % LANES];
}

void selective_forward(const float *u, const float *delta, const float *A, const float *Bm, const float *Cm,
                       i64 bc_stride, const float *D_skip, const float *z, i64 z_stride, const float *h0, float *y,
                       float *h_last, float *starts, i64 B, i64 T, i64 D, i64 N, i64 chunk_len, int use_softplus,
                       int threads) {
    const i64 blocks = lane_blocks(D), width = blocks * LANES, chunks = (T + chunk_len - 1) / chunk_len;
    const i64 state = blocks * N * LANES;
#pragma omp parallel num_threads(threads)
    {
        float *work = malloc(sizeof(float) * (2 * state + 4 * TILE * width));
        float *a = work, *h = a + state, *dl = h + state, *du = dl + TILE * width, *acc = du + TILE * width;
        float *gate = acc + TILE * width;
        into_lanes(a, A, D, N);
#pragma omp for schedule(static)
        for (i64 b = 0; b < B; b++) {
            const float *ub = u + b * T * D, *bb = Bm + b * T * bc_stride, *cb = Cm + b * T * bc_stride;
            into_lanes(h, h0 ? h0 + b * D * N : 0, D, N);
            for (i64 t0 = 0; t0 < T; t0 += TILE) {
                const i64 len = T - t0 < TILE ? T - t0 : TILE;
                forward_rows(ub, delta + b * T * D, z ? z + b * T * z_stride : 0, z_stride, D_skip, t0, len, D,
                             width, use_softplus, dl, du, acc, gate);
                /* a tile stops where a chunk starts, so the chunk's starting state is h between two tiles */
                for (i64 s0 = 0; s0 < len;) {
                    const i64 t = t0 + s0, to_chunk = chunk_len - t % chunk_len;
                    const i64 part = len - s0 < to_chunk ? len - s0 : to_chunk;
                    if (starts && t % chunk_len == 0)
                        store_start(starts + (b * chunks + t / chunk_len) * N * D, h, D, N);
                    for (i64 k = 0; k < blocks; k++)
                        scan_block(h + k * N * LANES, a + k * N * LANES, dl + s0 * width + k * LANES,
                                   du + s0 * width + k * LANES, acc + s0 * width + k * LANES,
                                   bb + t * bc_stride, cb + t * bc_stride, bc_stride, part, N, width);
                    s0 += part;
                }
                for (i64 s = 0; s < len; s++) {
                    float *restrict y_t = y + (b * T + t0 + s) * D;
#pragma omp simd
                    for (i64 d = 0; d < D; d++) y_t[d] = acc[s * width + d] * gate[s * width + d];
                }
            }
            state_from_lanes(h_last + b * D * N, h, D, N);
        }
        free(work);
    }
}

/* The backward's per-step rows: u, delta, delta u, dL/dy, softplus'(pre) (1 without softplus), silu(z) and
 * silu'(z), and the rows of dL/du, dL/ddelta and dL/dz it writes, each chunk_len rows of `width` floats. */
enum { ROW_U, ROW_DL, ROW_DU, ROW_GY, ROW_SLOPE, ROW_SILU, ROW_DSILU, ROW_GU, ROW_GD, ROW_GZ, BACKWARD_ROWS };

/* The per-thread memory of the backward, in floats: A in lanes, the adjoint of every channel and dL/dA in lanes
 * (blocks, N, LANES) each, D and dL/dD (width each), one block's chunk of states (chunk_len + 1, N, LANES),
 * decays, dL/dB and dL/dC per lane (chunk_len, N, LANES) each, and C . h + D u (chunk_len, LANES), and the rows. */
i64 selective_backward_scratch(i64 D, i64 N, i64 chunk_len) {
    const i64 width = lane_blocks(D) * LANES, state = lane_blocks(D) * N * LANES, block = N * LANES;
    return 3 * state + 2 * width + (4 * chunk_len + 1) * block + chunk_len * LANES +
           BACKWARD_ROWS * chunk_len * width;
}

/* The rows of one chunk's `len` steps from t0 (one batch row's tensors) */
static void backward_rows(const float *restrict u, const float *restrict delta, const float *restrict z, i64 z_stride,
                          const float *restrict grad_y, i64 t0, i64 len, i64 D, i64 width, i64 chunk_len,
                          int use_softplus, float *restrict rows) {
    float *restrict row[BACKWARD_ROWS];
    for (int r = 0; r < BACKWARD_ROWS; r++) row[r] = rows + r * chunk_len * width;
    for (i64 s = 0; s < len; s++) {
        const i64 t = t0 + s, at = s * width;
        float *restrict uu = row[ROW_U] + at, *restrict dl = row[ROW_DL] + at, *restrict du = row[ROW_DU] + at;
        float *restrict slope = row[ROW_SLOPE] + at, *restrict silu = row[ROW_SILU] + at;
        float *restrict dsilu = row[ROW_DSILU] + at;
        load_row(uu, u + t * D, D, width);
        load_row(dl, delta + t * D, D, width);
        load_row(row[ROW_GY] + at, grad_y + t * D, D, width);
        if (z) load_row(silu, z + t * z_stride, D, width);
#pragma omp simd
        for (i64 d = 0; d < width; d++) {
            const float pre = dl[d];
            slope[d] = use_softplus ? sigmoid(pre) : 1.0f; /* softplus'(pre) = sigmoid(pre) */
            dl[d] = use_softplus ? softplus(pre) : pre;
            du[d] = dl[d] * uu[d];
            if (z) { /* silu(z) = z sig, silu'(z) = sig (1 + z (1 - sig)) */
                const float zz = silu[d], sig = sigmoid(zz);
                silu[d] = zz * sig;
                dsilu[d] = sig * (1.0f + zz * (1.0f - sig));
            }
        }
    }
}

/* One block of LANES channels over one chunk, backward: the states recomputed from the chunk's start, then the
 * adjoint
 *     G_t = dL/dh_t = C_t gy_t + exp(delta_{t+1} A) G_{t+1}
 * run from the chunk's last step to its first, every gradient read off G and h:
 *     dC_t = sum_d h_t gy_t,  dB_t = sum_d G_t delta_t u_t,  d(delta u)_t = B_t . G_t,
 *     P_t = G_t a_t h_{t-1}:  dA = sum_t P_t delta_t,  d(delta_t) += sum_n P_t A.
 * With z, y = y_pre silu(z): dz = gy y_pre silu'(z), and gy becomes dL/dy_pre = gy silu(z). rows and skip are at
 * the block's first channel; g, g_a, a: the block's (N, LANES); start: the chunk's first state (N, D) at the
 * block's first channel, w of its channels in D. */
ALWAYS_INLINE void backward_block(float *restrict rows, i64 chunk_len, i64 width, const float *restrict a,
                                  const float *restrict skip, const float *restrict Bm, const float *restrict Cm,
                                  i64 bc_stride, const float *restrict start, i64 D, i64 w, int has_z,
                                  float *restrict g, float *restrict g_a, float *restrict g_skip, float *restrict hs,
                                  float *restrict as, float *restrict db_lanes, float *restrict dc_lanes,
                                  float *restrict y_pre, i64 len, i64 N) {
    float *row[BACKWARD_ROWS];
    for (int r = 0; r < BACKWARD_ROWS; r++) row[r] = rows + r * chunk_len * width;
    float *restrict gu_row = row[ROW_GU], *restrict gd_row = row[ROW_GD], *restrict gz_row = row[ROW_GZ];
    for (i64 n = 0; n < N; n++)
        for (i64 j = 0; j < LANES; j++) hs[n * LANES + j] = j < w ? start[n * D + j] : 0.0f;
    for (i64 s = 0; s < len; s++) {
        const float *restrict dl = row[ROW_DL] + s * width, *restrict du = row[ROW_DU] + s * width;
        const float *restrict b_t = Bm + s * bc_stride, *restrict c_t = Cm + s * bc_stride;
        const float *restrict prev = hs + s * N * LANES;
        float *restrict next = hs + (s + 1) * N * LANES, *restrict a_s = as + s * N * LANES;
        float sum[LANES];
        for (i64 j = 0; j < LANES; j++) sum[j] = skip[j] * row[ROW_U][s * width + j];
        for (i64 n = 0; n < N; n++) {
            const float bn = b_t[n], cn = c_t[n];
#pragma omp simd
            for (i64 j = 0; j < LANES; j++) {
                float decay = exp_approx(dl[j] * a[n * LANES + j]);
                float hv = decay * prev[n * LANES + j] + du[j] * bn;
                a_s[n * LANES + j] = decay;
                next[n * LANES + j] = hv;
                sum[j] += cn * hv;
            }
        }
        if (has_z)
            for (i64 j = 0; j < LANES; j++) y_pre[s * LANES + j] = sum[j];
    }
    for (i64 s = len - 1; s >= 0; s--) {
        const i64 at = s * width;
        const float *restrict uu = row[ROW_U] + at, *restrict dl = row[ROW_DL] + at, *restrict du = row[ROW_DU] + at;
        const float *restrict b_t = Bm + s * bc_stride, *restrict c_t = Cm + s * bc_stride;
        const float *restrict h_t = hs + (s + 1) * N * LANES, *restrict h_prev = hs + s * N * LANES;
        const float *restrict a_s = as + s * N * LANES;
        float gy[LANES], ddu[LANES], gdl[LANES];
        for (i64 j = 0; j < LANES; j++) {
            gy[j] = row[ROW_GY][at + j];
            if (has_z) {
                gz_row[at + j] = gy[j] * y_pre[s * LANES + j] * row[ROW_DSILU][at + j];
                gy[j] *= row[ROW_SILU][at + j];
            }
            ddu[j] = gdl[j] = 0.0f;
            g_skip[j] += gy[j] * uu[j];
        }
        float *restrict db_s = db_lanes + s * N * LANES, *restrict dc_s = dc_lanes + s * N * LANES;
        for (i64 n = 0; n < N; n++) {
            const float bn = b_t[n], cn = c_t[n];
#pragma omp simd
            for (i64 j = 0; j < LANES; j++) {
                const i64 i = n * LANES + j;
                float G = g[i] + cn * gy[j];
                dc_s[i] += h_t[i] * gy[j];
                db_s[i] += G * du[j];
                ddu[j] += bn * G;
                float P = G * a_s[i] * h_prev[i];
                g_a[i] += P * dl[j];
                gdl[j] += P * a[i];
                g[i] = a_s[i] * G;
            }
        }
        for (i64 j = 0; j < LANES; j++) {
            gd_row[at + j] = (gdl[j] + ddu[j] * uu[j]) * row[ROW_SLOPE][at + j];
            gu_row[at + j] = ddu[j] * dl[j] + gy[j] * skip[j];
        }
    }
}

/* Parallel over the batch: a row's dL/dB and dL/dC sum over all its channels, so one thread owns a row. grad_B,
 * grad_C: (B, T, N) contiguous; grad_z (B, T, D) at a row stride of gz_stride; grad_h_last, grad_h0 may be
 * NULL; accum (threads, D * N + D) gets each thread's dL/dA (D, N) and dL/dD (D), to be summed over threads by
 * the caller. */
void selective_backward(const float *u, const float *delta, const float *A, const float *Bm, const float *Cm,
                        i64 bc_stride, const float *D_skip, const float *z, i64 z_stride, const float *starts,
                        const float *grad_y, const float *grad_h_last, float *grad_u, float *grad_delta,
                        float *grad_B, float *grad_C, float *grad_z, i64 gz_stride, float *grad_h0, float *accum,
                        i64 B, i64 T, i64 D, i64 N, i64 chunk_len, int use_softplus, int threads) {
    const i64 blocks = lane_blocks(D), width = blocks * LANES, chunks = (T + chunk_len - 1) / chunk_len;
    const i64 state = blocks * N * LANES, block = N * LANES;
    memset(accum, 0, sizeof(float) * threads * (D * N + D));
#pragma omp parallel num_threads(threads)
    {
        float *scratch = malloc(sizeof(float) * selective_backward_scratch(D, N, chunk_len));
        float *a = scratch, *g = a + state, *g_a = g + state, *skip = g_a + state, *g_skip = skip + width;
        float *hs = g_skip + width, *as = hs + (chunk_len + 1) * block, *db_lanes = as + chunk_len * block;
        float *dc_lanes = db_lanes + chunk_len * block, *y_pre = dc_lanes + chunk_len * block;
        float *rows = y_pre + chunk_len * LANES;
        into_lanes(a, A, D, N);
        for (i64 d = 0; d < width; d++) skip[d] = D_skip && d < D ? D_skip[d] : 0.0f;
        memset(g_a, 0, sizeof(float) * state);
        memset(g_skip, 0, sizeof(float) * width);
#pragma omp for schedule(static)
        for (i64 b = 0; b < B; b++) {
            into_lanes(g, grad_h_last ? grad_h_last + b * D * N : 0, D, N);
            for (i64 c = chunks - 1; c >= 0; c--) {
                const i64 t0 = c * chunk_len, len = T - t0 < chunk_len ? T - t0 : chunk_len;
                const float *bc_b = Bm + (b * T + t0) * bc_stride, *cc_b = Cm + (b * T + t0) * bc_stride;
                backward_rows(u + b * T * D, delta + b * T * D, z ? z + b * T * z_stride : 0, z_stride,
                              grad_y + b * T * D, t0, len, D, width, chunk_len, use_softplus, rows);
                memset(db_lanes, 0, sizeof(float) * 2 * chunk_len * block);
                for (i64 k = 0; k < blocks; k++) {
                    const i64 d0 = k * LANES;
                    backward_block(rows + d0, chunk_len, width, a + k * block, skip + d0, bc_b, cc_b, bc_stride,
                                   starts + (b * chunks + c) * N * D + d0, D, D - d0, z != 0, g + k * block,
                                   g_a + k * block, g_skip + d0, hs, as, db_lanes, dc_lanes, y_pre, len, N);
                }
                for (i64 s = 0; s < len; s++) {
                    const i64 t = t0 + s, at = s * width;
                    memcpy(grad_u + (b * T + t) * D, rows + ROW_GU * chunk_len * width + at, sizeof(float) * D);
                    memcpy(grad_delta + (b * T + t) * D, rows + ROW_GD * chunk_len * width + at, sizeof(float) * D);
                    if (z)
                        memcpy(grad_z + (b * T + t) * gz_stride, rows + ROW_GZ * chunk_len * width + at,
                               sizeof(float) * D);
                    for (i64 n = 0; n < N; n++) {
                        float sb = 0.0f, sc = 0.0f;
                        for (i64 j = 0; j < LANES; j++) {
                            sb += db_lanes[(s * N + n) * LANES + j];
                            sc += dc_lanes[(s * N + n) * LANES + j];
                        }
                        grad_B[(b * T + t) * N + n] = sb;
                        grad_C[(b * T + t) * N + n] = sc;
                    }
                }
            }
            if (grad_h0) state_from_lanes(grad_h0 + b * D * N, g, D, N);
        }
        float *mine = accum + thread_index() * (D * N + D);
        for (i64 d = 0; d < D; d++) {
            for (i64 n = 0; n < N; n++) mine[d * N + n] += g_a[((d / LANES) * N + n) * LANES + d % LANES];
            mine[D * N + d] += g_skip[d];
        }
        free(scratch);
    }
}

/* ---- Causal depthwise conv, with SiLU for Mamba (before its scan) or without (the residual block's Conv4) -----
 *
 *     u_t = silu(c_t) (silu = 1) or c_t (silu = 0),    c_t = bias + sum_{j < k} w_j x_{t - (k - 1) + j}
 *
 * x: (B, T, D) at a row stride of x_stride (a view into in_proj's output); the k - 1 inputs before the sequence
 * come from conv0 (B, D, k - 1) or are zeros; w: (k, D), tap-major; u: (B, T, D) contiguous. */
ALWAYS_INLINE float conv_input(const float *restrict x, i64 x_stride, const float *restrict conv0, i64 p, i64 d,
                               i64 k) {
    if (p >= 0) return x[p * x_stride + d];
    return conv0 ? conv0[d * (k - 1) + (k - 1) + p] : 0.0f;
}

/* acc += coeff * (input p): a row of x as vectors, element by element for the inputs before the sequence. */
ALWAYS_INLINE void add_times_input(float *restrict acc, const float *restrict coeff, const float *restrict x,
                                   i64 x_stride, const float *restrict conv0, i64 p, i64 D, i64 k) {
    if (p >= 0) {
        const float *restrict xr = x + p * x_stride;
#pragma omp simd
        for (i64 d = 0; d < D; d++) acc[d] += coeff[d] * xr[d];
    } else {
        for (i64 d = 0; d < D; d++) acc[d] += coeff[d] * conv_input(x, x_stride, conv0, p, d, k);
    }
}

/* c_t into acc (D floats): rows of x as vectors once all k inputs are in the sequence, element by element for the
 * first k - 1 steps (whose inputs come from conv0). */
ALWAYS_INLINE void conv_row(const float *restrict x, i64 x_stride, const float *restrict conv0,
                            const float *restrict w, const float *restrict bias, float *restrict acc, i64 t, i64 D,
                            i64 k) {
    for (i64 d = 0; d < D; d++) acc[d] = bias[d];
    for (i64 j = 0; j < k; j++) add_times_input(acc, w + j * D, x, x_stride, conv0, t - (k - 1) + j, D, k);
}

void causal_conv_forward(const float *x, i64 x_stride, const float *conv0, const float *w, const float *bias, float *u,
                         i64 B, i64 T, i64 D, i64 k, int silu, int threads) {
#pragma omp parallel for num_threads(threads) schedule(static)
    for (i64 b = 0; b < B; b++) {
        const float *xb = x + b * T * x_stride, *cb = conv0 ? conv0 + b * D * (k - 1) : 0;
        for (i64 t = 0; t < T; t++) {
            float *restrict ut = u + (b * T + t) * D;
            conv_row(xb, x_stride, cb, w, bias, ut, t, D, k);
            if (!silu) continue;
#pragma omp simd
            for (i64 d = 0; d < D; d++) ut[d] = silu_gate(ut[d]);
        }
    }
}

/* The backward: grad_u (B, T, D), dL/du, becomes dL/dc in place (it already is without SiLU); writes dL/dx into grad_x (at a row stride of
 * gx_stride) and dL/dconv0 into grad_conv0 (B, D, k - 1) when given; grad_last (B, D, k - 1) or NULL is the
 * gradient of the last k - 1 inputs (the carried conv state); accum (threads, k * D + D) gets each thread's
 * dL/dw (k, D) and dL/dbias (D), to be summed over threads by the caller. */
void causal_conv_backward(const float *x, i64 x_stride, const float *conv0, const float *w, const float *bias,
                          float *grad_u, const float *grad_last, float *grad_x, i64 gx_stride, float *grad_conv0,
                          float *accum, i64 B, i64 T, i64 D, i64 k, int silu, int threads) {
    memset(accum, 0, sizeof(float) * threads * (k * D + D));
#pragma omp parallel num_threads(threads)
    {
        const int thread = thread_index();
        float *restrict g_w = accum + thread * (k * D + D), *restrict g_b = g_w + k * D;
        float *restrict c = malloc(sizeof(float) * D);
#pragma omp for schedule(static)
        for (i64 b = 0; b < B; b++) {
            const float *xb = x + b * T * x_stride, *cb = conv0 ? conv0 + b * D * (k - 1) : 0;
            float *gc = grad_u + b * T * D;
            for (i64 t = 0; t < T; t++) { /* dL/dc = dL/du silu'(c), silu'(c) = sig (1 + c (1 - sig)) */
                float *restrict gt = gc + t * D;
                if (silu) {
                    conv_row(xb, x_stride, cb, w, bias, c, t, D, k);
#pragma omp simd
                    for (i64 d = 0; d < D; d++) {
                        float sig = sigmoid(c[d]);
                        gt[d] *= sig * (1.0f + c[d] * (1.0f - sig));
                    }
                }
#pragma omp simd
                for (i64 d = 0; d < D; d++) g_b[d] += gt[d];
                for (i64 j = 0; j < k; j++) /* dL/dw_j += dL/dc_t x_{t - (k - 1) + j} */
                    add_times_input(g_w + j * D, gt, xb, x_stride, cb, t - (k - 1) + j, D, k);
            }
            /* input p (from -(k - 1), conv0, to T - 1) feeds c_{p + (k - 1) - j} through tap j */
            for (i64 p = -(k - 1); p < T; p++) {
                float *restrict out = p >= 0 ? grad_x + (b * T + p) * gx_stride : c;
                for (i64 d = 0; d < D; d++) out[d] = 0.0f;
                for (i64 j = 0; j < k; j++) {
                    const i64 t = p + (k - 1) - j;
                    if (t < 0 || t >= T) continue;
                    const float *restrict gt = gc + t * D, *restrict wj = w + j * D;
#pragma omp simd
                    for (i64 d = 0; d < D; d++) out[d] += gt[d] * wj[d];
                }
                const i64 m = p - (T - (k - 1)); /* the input's place in the carried state, when m >= 0 */
                if (grad_last && m >= 0)
                    for (i64 d = 0; d < D; d++) out[d] += grad_last[(b * D + d) * (k - 1) + m];
                if (p < 0 && grad_conv0)
                    for (i64 d = 0; d < D; d++) grad_conv0[(b * D + d) * (k - 1) + (k - 1) + p] = out[d];
            }
        }
        free(c);
    }
}

/* ---- RMSNorm over the last dimension (the residual block's norms) ----------------------------------------------
 *
 *     y = x * r * w,    r = 1 / sqrt(mean(x^2) + eps)      per row of D; x, y: (rows, D) contiguous, w: (D,)
 *
 * The forward writes y and r (rows,); the backward, with xh = x * r and g = dL/dy * w,
 *     dL/dx = r * (g - xh * mean(g * xh)),    dL/dw = sum over rows of dL/dy * xh,
 * reads x, r and dL/dy once and writes dL/dx once; accum (threads, D) gets each thread's dL/dw, to be summed
 * over threads by the caller. torch's composite rms_norm is about twelve passes over memory each way. */
void rms_norm_forward(const float *x, const float *w, float *y, float *rstd, i64 rows, i64 D, float eps,
                      int threads) {
#pragma omp parallel for num_threads(threads) schedule(static)
    for (i64 i = 0; i < rows; i++) {
        const float *restrict xr = x + i * D;
        float *restrict yr = y + i * D;
        float squares = 0.0f;
#pragma omp simd reduction(+ : squares)
        for (i64 d = 0; d < D; d++) squares += xr[d] * xr[d];
        const float r = 1.0f / sqrtf(squares / (float)D + eps);
        rstd[i] = r;
#pragma omp simd
        for (i64 d = 0; d < D; d++) yr[d] = xr[d] * r * w[d];
    }
}

void rms_norm_backward(const float *x, const float *w, const float *rstd, const float *grad_y, float *grad_x,
                       float *accum, i64 rows, i64 D, int threads) {
    memset(accum, 0, sizeof(float) * threads * D);
#pragma omp parallel num_threads(threads)
    {
        float *restrict g_w = accum + thread_index() * D;
#pragma omp for schedule(static)
        for (i64 i = 0; i < rows; i++) {
            const float *restrict xr = x + i * D, *restrict gy = grad_y + i * D;
            float *restrict gx = grad_x + i * D;
            const float r = rstd[i];
            float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
            for (i64 d = 0; d < D; d++) {
                const float xh = xr[d] * r;
                dot += gy[d] * w[d] * xh;
                g_w[d] += gy[d] * xh;
            }
            const float mean_dot = dot / (float)D;
#pragma omp simd
            for (i64 d = 0; d < D; d++) gx[d] = r * (gy[d] * w[d] - xr[d] * r * mean_dot);
        }
    }
}

/* ---- GEGLU, the residual block's MLP between its two projections --------------------------------------------
 *
 *     out = v * gelu(g),    [v | g] = a row of h (2H),    gelu(g) = g Phi(g),  Phi(g) = (1 + erf(g / sqrt 2)) / 2
 *     dL/dv = dL/dout * gelu(g),    dL/dg = dL/dout * v * (Phi(g) + g phi(g)),    phi(g) = e^(-g^2 / 2) / sqrt(2 pi)
 *
 * h: (rows, 2H), out and dL/dout: (rows, H), dL/dh: (rows, 2H), contiguous, all float32 or all bfloat16 (`bf16`,
 * as autocast leaves them: computed in float32, rounded once to nearest even). erf is Abramowitz and Stegun
 * 7.1.26 (absolute error < 1.5e-7) around the vectorised exp, where torch calls the exact erf: the same to
 * float32 rounding. */
static inline float bf16_load(uint16_t v) {
    union { uint32_t bits; float value; } u = {(uint32_t)v << 16};
    return u.value;
}
static inline uint16_t bf16_store(float f) {
    union { float value; uint32_t bits; } u = {f};
    const uint32_t rounded = (u.bits + 0x7FFFu + ((u.bits >> 16) & 1u)) >> 16;
    return (u.bits & 0x7FFFFFFFu) > 0x7F800000u ? (uint16_t)((u.bits >> 16) | 0x40u) : (uint16_t)rounded; /* NaN */
}

/* Phi(g) and e^(-g^2 / 2) */
ALWAYS_INLINE void normal_cdf(float g, float *cdf, float *gauss) {
    const float x = fabsf(g) * 0.70710678118654752f, t = 1.0f / (1.0f + 0.3275911f * x);
    const float e = exp_approx(-x * x);
    float p = 1.061405429f;
    p = p * t - 1.453152027f;
    p = p * t + 1.421413741f;
    p = p * t - 0.284496736f;
    p = p * t + 0.254829592f;
    const float erf_abs = 1.0f - p * t * e;
    *cdf = 0.5f + 0.5f * (g < 0.0f ? -erf_abs : erf_abs);
    *gauss = e;
}

#define GEGLU_LOAD(ptr, i) (bf16 ? bf16_load(((const uint16_t *)(ptr))[i]) : ((const float *)(ptr))[i])
#define GEGLU_STORE(ptr, i, value)                                                                                 \
    do {                                                                                                           \
        if (bf16) ((uint16_t *)(ptr))[i] = bf16_store(value);                                                     \
        else ((float *)(ptr))[i] = (value);                                                                        \
    } while (0)

ALWAYS_INLINE void geglu_forward_rows(const void *h, void *out, i64 rows, i64 H, const int bf16, int threads) {
#pragma omp parallel for num_threads(threads) schedule(static)
    for (i64 i = 0; i < rows; i++) {
#pragma omp simd
        for (i64 d = 0; d < H; d++) {
            const float v = GEGLU_LOAD(h, i * 2 * H + d), g = GEGLU_LOAD(h, i * 2 * H + H + d);
            float cdf, gauss;
            normal_cdf(g, &cdf, &gauss);
            GEGLU_STORE(out, i * H + d, v * g * cdf);
        }
    }
}

ALWAYS_INLINE void geglu_backward_rows(const void *h, const void *grad_out, void *grad_h, i64 rows, i64 H,
                                       const int bf16, int threads) {
#pragma omp parallel for num_threads(threads) schedule(static)
    for (i64 i = 0; i < rows; i++) {
#pragma omp simd
        for (i64 d = 0; d < H; d++) {
            const float v = GEGLU_LOAD(h, i * 2 * H + d), g = GEGLU_LOAD(h, i * 2 * H + H + d);
            const float go = GEGLU_LOAD(grad_out, i * H + d);
            float cdf, gauss;
            normal_cdf(g, &cdf, &gauss);
            GEGLU_STORE(grad_h, i * 2 * H + d, go * g * cdf);
            GEGLU_STORE(grad_h, i * 2 * H + H + d, go * v * (cdf + g * gauss * 0.39894228040143268f));
        }
    }
}

void geglu_forward(const void *h, void *out, i64 rows, i64 H, int bf16, int threads) {
    if (bf16) geglu_forward_rows(h, out, rows, H, 1, threads);
    else geglu_forward_rows(h, out, rows, H, 0, threads);
}

void geglu_backward(const void *h, const void *grad_out, void *grad_h, i64 rows, i64 H, int bf16, int threads) {
    if (bf16) geglu_backward_rows(h, grad_out, grad_h, rows, H, 1, threads);
    else geglu_backward_rows(h, grad_out, grad_h, rows, H, 0, threads);
}
