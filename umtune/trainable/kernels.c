/* The decoders' kernels in training, each one pass over memory forward and one backward, for
 * bf16 and float32 activations (math in float32), split over OpenMP threads (torch's own
 * runtime, already loaded). tanh, sigmoid and exp are multiply-adds (rational or polynomial
 * approximations), so the loops vectorise (their clamps need -fno-trapping-math on AVX2).
 *
 * The gate (gate.py): tanh(a) * sigmoid(b) of a layer's pre-activation h = [a, b] plus its
 * latent frame's conditioning (float32, as its gradient).
 * The cross-entropy (cross_entropy.py): each row's log-sum-exp of its logits minus the
 * target's logit; its gradient, softmax minus the target's one-hot, times the row's. */
#include <math.h>
#include <stdint.h>
#include <string.h>

typedef uint16_t bf16;

static inline float bf16_load(bf16 v) {
    const uint32_t u = (uint32_t)v << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline bf16 bf16_store(float f) { /* round to nearest even, as PyTorch */
    uint32_t u;
    memcpy(&u, &f, 4);
    return (bf16)((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}

static inline float f32_load(float v) { return v; }
static inline float f32_store(float f) { return f; }

/* Eigen's float tanh: a rational function on [-7.9, 7.9], within a few ulp of float32, as its
 * numerator and denominator (so that the gate divides once for its tanh and its sigmoid). */
static inline float tanh_fraction(float x, float *restrict den) {
    x = x < -7.90531110763549805f ? -7.90531110763549805f : x;
    x = x > 7.90531110763549805f ? 7.90531110763549805f : x;
    const float x2 = x * x;
    float p = -2.76076847742355e-16f;
    p = p * x2 + 2.00018790482477e-13f;
    p = p * x2 - 8.60467152213735e-11f;
    p = p * x2 + 5.12229709037114e-08f;
    p = p * x2 + 1.48572235717979e-05f;
    p = p * x2 + 6.37261928875436e-04f;
    p = p * x2 + 4.89352455891786e-03f;
    float q = 1.19825839466702e-06f;
    q = q * x2 + 1.18534705686654e-04f;
    q = q * x2 + 2.26843463243900e-03f;
    q = q * x2 + 4.89352518554385e-03f;
    *den = q;
    return x * p;
}

/* tanh(a) and sigmoid(b) = (1 + tanh(b / 2)) / 2 with one division. */
static inline void tanh_sigmoid(float a, float b, float *restrict t, float *restrict s) {
    float qa, qb;
    const float pa = tanh_fraction(a, &qa), pb = tanh_fraction(0.5f * b, &qb);
    const float r = 1.0f / (qa * qb);
    *t = pa * qb * r;
    *s = 0.5f * (qb + pb) * qa * r;
}

/* Eigen's float exp (Cephes): x = m ln2 + r, |r| <= ln2 / 2, exp(r) by a degree-6 polynomial,
 * times 2^m built in the exponent bits; within a few ulp of float32 on [-87.3, 88.4]. */
static inline float exp_poly(float x) {
    x = x < -87.3365478515625f ? -87.3365478515625f : x;
    x = x > 88.3762626647949f ? 88.3762626647949f : x;
    const float m = rintf(x * 1.44269504088896341f);
    float r = x - m * 0.693359375f;
    r = r + m * 2.12194440e-4f;
    float y = 1.9875691500E-4f;
    y = y * r + 1.3981999507E-3f;
    y = y * r + 8.3334519073E-3f;
    y = y * r + 4.1665795894E-2f;
    y = y * r + 1.6666665459E-1f;
    y = y * r + 5.0000001201E-1f;
    y = y * r * r + r + 1.0f;
    const int32_t bits = ((int32_t)m + 127) << 23;
    float scale;
    memcpy(&scale, &bits, 4);
    return y * scale;
}

enum { MAX_GATE = 4096 };

/* h (frames, pool, 2H) and cond (frames, 2H) -> out (frames, pool, H); and the backward:
 * grad (frames, pool, H) -> grad_h (frames, pool, 2H), grad_cond (frames, 2H), and out again
 * where given (else NULL): a caller that did not keep the forward's output gets it back for
 * the cost of a store. */
#define GATE_KERNELS(NAME, T, LOAD, STORE)                                                      \
    void umtune_gate_##NAME(const T *restrict h, const float *restrict cond, T *restrict out,   \
                            int64_t frames, int64_t pool, int64_t H) {                          \
        _Pragma("omp parallel for") for (int64_t f = 0; f < frames; f++) {                      \
            const float *restrict c = cond + f * 2 * H;                                         \
            for (int64_t p = 0; p < pool; p++) {                                                \
                const T *restrict x = h + (f * pool + p) * 2 * H;                               \
                T *restrict o = out + (f * pool + p) * H;                                       \
                _Pragma("omp simd") for (int64_t i = 0; i < H; i++) {                           \
                    float t, s;                                                                 \
                    tanh_sigmoid(LOAD(x[i]) + c[i], LOAD(x[H + i]) + c[H + i], &t, &s);         \
                    o[i] = STORE(t * s);                                                        \
                }                                                                               \
            }                                                                                   \
        }                                                                                       \
    }                                                                                           \
                                                                                                \
    void umtune_gate_backward_##NAME(const T *restrict grad, const T *restrict h,               \
                                     const float *restrict cond, T *restrict grad_h,            \
                                     float *restrict grad_cond, T *restrict out,                \
                                     int64_t frames, int64_t pool, int64_t H) {                 \
        _Pragma("omp parallel for") for (int64_t f = 0; f < frames; f++) {                      \
            const float *restrict c = cond + f * 2 * H;                                         \
            float sum[MAX_GATE] = {0};                                                          \
            T unused[MAX_GATE / 2];                                                             \
            for (int64_t p = 0; p < pool; p++) {                                                \
                const int64_t row = f * pool + p;                                               \
                const T *restrict x = h + row * 2 * H, *restrict g = grad + row * H;            \
                T *restrict d = grad_h + row * 2 * H;                                           \
                T *restrict o = out ? out + row * H : unused;                                   \
                _Pragma("omp simd") for (int64_t i = 0; i < H; i++) {                           \
                    float t, s;                                                                 \
                    tanh_sigmoid(LOAD(x[i]) + c[i], LOAD(x[H + i]) + c[H + i], &t, &s);         \
                    const float go = LOAD(g[i]);                                                \
                    const float da = go * s * (1.0f - t * t), db = go * t * s * (1.0f - s);     \
                    d[i] = STORE(da);                                                           \
                    d[H + i] = STORE(db);                                                       \
                    o[i] = STORE(t * s);                                                        \
                    sum[i] += da;                                                               \
                    sum[H + i] += db;                                                           \
                }                                                                               \
            }                                                                                   \
            memcpy(grad_cond + f * 2 * H, sum, 2 * H * sizeof(float));                          \
        }                                                                                       \
    }

GATE_KERNELS(bf16, bf16, bf16_load, bf16_store)
GATE_KERNELS(f32, float, f32_load, f32_store)

/* logits (rows, classes), target (rows) -> loss (rows), lse (rows); and the backward:
 * grad (rows) -> grad_logits (rows, classes). */
#define CE_KERNELS(NAME, T, LOAD, STORE)                                                        \
    void umtune_cross_entropy_##NAME(const T *restrict logits, const int64_t *restrict target, \
                                     float *restrict loss, float *restrict lse, int64_t rows,   \
                                     int64_t classes) {                                         \
        _Pragma("omp parallel for") for (int64_t n = 0; n < rows; n++) {                        \
            const T *restrict x = logits + n * classes;                                         \
            float top = -INFINITY, sum = 0.0f;                                                  \
            _Pragma("omp simd reduction(max : top)") for (int64_t i = 0; i < classes; i++)      \
                top = LOAD(x[i]) > top ? LOAD(x[i]) : top;                                      \
            _Pragma("omp simd reduction(+ : sum)") for (int64_t i = 0; i < classes; i++)        \
                sum += exp_poly(LOAD(x[i]) - top);                                              \
            lse[n] = top + logf(sum);                                                           \
            loss[n] = lse[n] - LOAD(x[target[n]]);                                              \
        }                                                                                       \
    }                                                                                           \
                                                                                                \
    void umtune_cross_entropy_backward_##NAME(                                                  \
        const float *restrict grad, const T *restrict logits, const int64_t *restrict target,  \
        const float *restrict lse, T *restrict grad_logits, int64_t rows, int64_t classes) {    \
        _Pragma("omp parallel for") for (int64_t n = 0; n < rows; n++) {                        \
            const T *restrict x = logits + n * classes;                                         \
            T *restrict d = grad_logits + n * classes;                                          \
            const float g = grad[n], l = lse[n];                                                \
            _Pragma("omp simd") for (int64_t i = 0; i < classes; i++)                           \
                d[i] = STORE(g * exp_poly(LOAD(x[i]) - l));                                     \
            d[target[n]] = STORE(g * (exp_poly(LOAD(x[target[n]]) - l) - 1.0f));                \
        }                                                                                       \
    }

CE_KERNELS(bf16, bf16, bf16_load, bf16_store)
CE_KERNELS(f32, float, f32_load, f32_store)

/* A convolution's taps, channels-last (taps.py): the first `channels` of each row of x (rows,
 * stride), rows = B * len -> out (rows, kernel * channels), tap i of row t reading row
 * t + i * dilation - before of its sequence (zeros outside it); and their gradient added back
 * into grad_x's first `channels` (each row's taps summed in float32, stored once). */
#define TAPS_KERNELS(NAME, T, LOAD, STORE)                                                      \
    void umtune_taps_##NAME(const T *restrict x, T *restrict out, int64_t B, int64_t len,      \
                            int64_t stride, int64_t channels, int64_t kernel, int64_t dilation, \
                            int64_t before) {                                                   \
        _Pragma("omp parallel for") for (int64_t r = 0; r < B * len; r++) {                     \
            const int64_t t = r % len;                                                          \
            T *restrict o = out + r * kernel * channels;                                        \
            for (int64_t i = 0; i < kernel; i++) {                                              \
                const int64_t s = t + i * dilation - before;                                    \
                if (s >= 0 && s < len)                                                          \
                    memcpy(o + i * channels, x + (r - t + s) * stride, channels * sizeof(T));   \
                else                                                                            \
                    memset(o + i * channels, 0, channels * sizeof(T));                          \
            }                                                                                   \
        }                                                                                       \
    }                                                                                           \
                                                                                                \
    void umtune_tap_grads_##NAME(const T *restrict grad_taps, T *restrict grad_x, int64_t B,   \
                                 int64_t len, int64_t stride, int64_t channels, int64_t kernel, \
                                 int64_t dilation, int64_t before) {                            \
        _Pragma("omp parallel for") for (int64_t r = 0; r < B * len; r++) {                     \
            const int64_t s = r % len;                                                          \
            T *restrict g = grad_x + r * stride;                                                \
            float sum[MAX_GATE];                                                                \
            _Pragma("omp simd") for (int64_t c = 0; c < channels; c++) sum[c] = LOAD(g[c]);     \
            for (int64_t i = 0; i < kernel; i++) {                                              \
                const int64_t t = s - i * dilation + before;                                    \
                if (t < 0 || t >= len) continue;                                                \
                const T *restrict d = grad_taps + ((r - s + t) * kernel + i) * channels;        \
                _Pragma("omp simd") for (int64_t c = 0; c < channels; c++) sum[c] += LOAD(d[c]);\
            }                                                                                   \
            _Pragma("omp simd") for (int64_t c = 0; c < channels; c++) g[c] = STORE(sum[c]);    \
        }                                                                                       \
    }

TAPS_KERNELS(bf16, bf16, bf16_load, bf16_store)
TAPS_KERNELS(f32, float, f32_load, f32_store)

/* The float32 sums of the first `channels` of each row of bf16 x (rows, stride) (a bias's
 * gradient), in `blocks` partial sums (blocks, channels) over consecutive rows, whatever the
 * threads, so that the caller's sum of them is the same on every run. */
void umtune_column_sums_bf16(const bf16 *restrict x, float *restrict partial, int64_t rows,
                             int64_t stride, int64_t channels, int64_t blocks) {
#pragma omp parallel for schedule(static)
    for (int64_t b = 0; b < blocks; b++) {
        float *restrict sum = partial + b * channels;
        memset(sum, 0, channels * sizeof(float));
        for (int64_t r = b * rows / blocks; r < (b + 1) * rows / blocks; r++) {
            const bf16 *restrict row = x + r * stride;
#pragma omp simd
            for (int64_t c = 0; c < channels; c++) sum[c] += bf16_load(row[c]);
        }
    }
}
