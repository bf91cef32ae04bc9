/* The cached generation step of a DecoderStack (generate.py) as one C loop.
 *
 * At a few rows a step is about 5 x layers tiny matmuls and pointwise ops; through PyTorch each
 * costs microseconds of dispatch, here a loop over weights that stream from cache. The layout
 * and the folded weights are DecoderStack's and DecoderCache's own tensors (see fused.py), so
 * both paths compute the same function: generate.py's tests hold both to the teacher-forced
 * pass. Compiled with -ffast-math for vectorised tanhf/expf (glibc's libmvec); sums are
 * reassociated, so results differ from PyTorch's in the last bits.
 */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

/* Sizes, in this order, as fused.py passes them. */
enum { LAYERS, DECODERS, BATCH, RESIDUAL, SKIP, GATE, KERNEL, CLASSES, POOL, LENGTH, N_SIZES };

/* Tensors (float32, contiguous), in this order, as fused.py passes them. */
enum {
    START,        /* (G, k + 1, R + S): the last k inputs and a 1 -> residual and skip sums */
    PAST_W,       /* (layers, G, (k - 1) R, gate): the dilated convs' taps on the past */
    PRESENT_W,    /* (layers, G, R, gate): their tap on the present */
    RES_SKIP,     /* (layers, G, gate / 2 + 1, R + S): 1x1 after the gate, bias last */
    HEAD_HIDDEN,  /* (G, S, S) */
    HEAD_OUT,     /* (G, S, classes) */
    OUT_BIAS,     /* (G, classes) */
    GATE_BIAS,    /* (frames, layers, G, B, gate): biases plus projected latent, per frame */
    HEAD_BIAS,    /* (frames, G, B, S) */
    PAST,         /* (slots, G * B, R): every layer's ring of past inputs (PastInputs) */
    INPUTS,       /* (G, B, k + 1): the last k inputs and a 1 */
    LOGITS,       /* (G, B, classes): the last step's */
    SCRATCH,      /* B * (R + S + gate + gate / 2 + S) */
    N_TENSORS
};

/* y[r] += x[r] . W for `rows` rows: y (rows, out) with row stride ys, x (rows, in) with row
 * stride xs, W (in, out). Each weight row is read once for all rows. */
static void matvec_add(float *restrict y, int64_t ys, const float *restrict x, int64_t xs,
                       int64_t rows, const float *restrict W, int64_t in, int64_t out) {
    for (int64_t i = 0; i < in; i++) {
        const float *restrict w = W + i * out;
        for (int64_t r = 0; r < rows; r++) {
            const float xi = x[r * xs + i];
            float *restrict yr = y + r * ys;
            for (int64_t o = 0; o < out; o++) yr[o] += xi * w[o];
        }
    }
}

static int64_t wrap(int64_t t, int64_t length) { return ((t % length) + length) % length; }

static void relu(float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++) x[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

/* One decoder's B rows through one step: inputs already hold this step's input. */
static void step_rows(const int64_t *n, float *const *p, const int64_t *ring, int64_t g,
                      int64_t t) {
    const int64_t L = n[LAYERS], G = n[DECODERS], B = n[BATCH], R = n[RESIDUAL], S = n[SKIP],
                  GT = n[GATE], H = GT / 2, K = n[KERNEL], C = n[CLASSES], RS = R + S;
    const int64_t frame = t / n[POOL], rows = G * B;
    const int64_t *lengths = ring, *offsets = ring + L, *lags = ring + 2 * L;
    float *sums = p[SCRATCH], *gates = sums + B * RS, *gated = gates + B * GT,
          *hidden = gated + B * H;

    memset(sums, 0, B * RS * sizeof(float));
    matvec_add(sums, RS, p[INPUTS] + g * B * (K + 1), K + 1, B, p[START] + g * (K + 1) * RS,
               K + 1, RS);
    for (int64_t l = 0; l < L; l++) {
        const int64_t lg = l * G + g, length = lengths[l], offset = offsets[l];
        memcpy(gates, p[GATE_BIAS] + ((frame * L + l) * G + g) * B * GT, B * GT * sizeof(float));
        for (int64_t j = 0; j < K - 1; j++) {  /* oldest tap first */
            const int64_t slot = offset + wrap(t - lags[l * (K - 1) + j], length);
            matvec_add(gates, GT, p[PAST] + (slot * rows + g * B) * R, R, B,
                       p[PAST_W] + (lg * (K - 1) + j) * R * GT, R, GT);
        }
        matvec_add(gates, GT, sums, RS, B, p[PRESENT_W] + lg * R * GT, R, GT);
        const int64_t slot = offset + wrap(t, length);  /* the oldest input's, now read */
        for (int64_t b = 0; b < B; b++)
            memcpy(p[PAST] + (slot * rows + g * B + b) * R, sums + b * RS, R * sizeof(float));
        for (int64_t b = 0; b < B; b++) {
            const float *a = gates + b * GT;
            for (int64_t i = 0; i < H; i++)
                gated[b * H + i] = tanhf(a[i]) / (1.0f + expf(-a[H + i]));
        }
        const float *res_skip = p[RES_SKIP] + lg * (H + 1) * RS;
        for (int64_t b = 0; b < B; b++)
            for (int64_t o = 0; o < RS; o++) sums[b * RS + o] += res_skip[H * RS + o];
        matvec_add(sums, RS, gated, H, B, res_skip, H, RS);
    }
    memcpy(hidden, p[HEAD_BIAS] + (frame * G + g) * B * S, B * S * sizeof(float));
    for (int64_t b = 0; b < B; b++) relu(sums + b * RS + R, S);
    matvec_add(hidden, S, sums + R, RS, B, p[HEAD_HIDDEN] + g * S * S, S, S);
    relu(hidden, B * S);
    float *logits = p[LOGITS] + g * B * C;
    for (int64_t b = 0; b < B; b++) memcpy(logits + b * C, p[OUT_BIAS] + g * C, C * sizeof(float));
    matvec_add(logits, C, hidden, S, B, p[HEAD_OUT] + g * S * C, S, C);
}

/* The lowest logit of n that may be drawn: log(floor) above log(sum(exp(x))), but never above
 * the most likely class's. */
static float floor_cut(const float *x, int64_t n, float floor) {
    float top = x[0];
    for (int64_t i = 1; i < n; i++) top = x[i] > top ? x[i] : top;
    float sum = 0.0f;
    for (int64_t i = 0; i < n; i++) sum += expf(x[i] - top);
    const float cut = top + logf(sum) + logf(floor);
    return cut < top ? cut : top;
}

/* The expectation of levels[c] under softmax(x) over n classes. */
static float expected(const float *x, const float *levels, int64_t n) {
    float top = x[0];
    for (int64_t i = 1; i < n; i++) top = x[i] > top ? x[i] : top;
    float sum = 0.0f, weighted = 0.0f;
    for (int64_t i = 0; i < n; i++) {
        const float w = expf(x[i] - top);
        sum += w;
        weighted += w * levels[i];
    }
    return weighted / sum;
}

/* Steps t0 .. t0 + steps - 1 of every decoder. The input of step t is codes[.., t - 1] (0 at
 * t = 0). With noise (steps, G, B, classes), step t's code is argmax(logits + temperature *
 * noise) (Gumbel-max sampling) over the classes at least `floor` probable (0: all; the most
 * likely is always among them), written to codes[.., t]; with `means` too, the expectation of
 * levels[c] under the step's (trained) distribution goes to means[.., t]. Without noise, codes
 * are only read (the teacher-forced path, for tests) and LOGITS hold the last step's.
 * codes and means: (G, B, LENGTH). */
void umtune_steps(const int64_t *n, float *const *p, const int64_t *ring, int64_t *codes,
                  const float *noise, float temperature, float floor, const float *levels,
                  float *means, int64_t t0, int64_t steps) {
    const int64_t G = n[DECODERS], B = n[BATCH], K = n[KERNEL], C = n[CLASSES], T = n[LENGTH];
    for (int64_t t = t0; t < t0 + steps; t++) {
        for (int64_t g = 0; g < G; g++) {
            for (int64_t b = 0; b < B; b++) {
                float *in = p[INPUTS] + (g * B + b) * (K + 1);
                memmove(in, in + 1, (K - 1) * sizeof(float));
                in[K - 1] = t > 0 ? (float)codes[(g * B + b) * T + t - 1] / (float)(C - 1) - 0.5f
                                  : 0.0f;
            }
            step_rows(n, p, ring, g, t);
            if (!noise) continue;
            for (int64_t b = 0; b < B; b++) {
                const float *logits = p[LOGITS] + (g * B + b) * C;
                const float *gumbel = noise + (((t - t0) * G + g) * B + b) * C;
                if (means) means[(g * B + b) * T + t] = expected(logits, levels, C);
                const float cut = floor > 0.0f ? floor_cut(logits, C, floor) : -FLT_MAX;
                int64_t best = -1;
                float top = -FLT_MAX;
                for (int64_t c = 0; c < C; c++) {
                    if (logits[c] < cut) continue;
                    const float v = logits[c] + temperature * gumbel[c];
                    if (best < 0 || v > top) {
                        top = v;
                        best = c;
                    }
                }
                codes[(g * B + b) * T + t] = best;
            }
        }
    }
}
