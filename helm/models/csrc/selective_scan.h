/* Body of the selective-scan kernels for one element type; selective_scan.c includes it once per type with
 * T (float / double), EXP (expf / exp) and NAME(x) (suffix) defined. See selective_scan.c for the layout.
 *
 * One task = one batch row and a block of LANES channels. Inside a task every array is laid out [state][lane]
 * so each line of arithmetic is one vector over the block's channels: a channel's state never needs a
 * horizontal sum, and a block's states (n x LANES) stay in L1 for the whole sequence. A block at the end of
 * the channels with fewer than LANES channels runs with zeros in the missing lanes (dt = x = 0: no effect). */

/* Load step t's per-channel inputs of the block [c0, c0 + kb) into full-width lane arrays. */
static inline __attribute__((always_inline)) void NAME(lanes)(T *out, const T *src, int64_t kb) {
    for (int64_t k = 0; k < LANES; k++) out[k] = k < kb ? src[k] : 0;
}

/* A's rows of the block, transposed to [n][LANES]. */
static inline __attribute__((always_inline)) void NAME(block_A)(T *At, const T *A, int64_t c0, int64_t kb,
                                                                int64_t n) {
    for (int64_t j = 0; j < n; j++)
        for (int64_t k = 0; k < LANES; k++) At[j * LANES + k] = k < kb ? A[(c0 + k) * n + j] : 0;
}

static inline __attribute__((always_inline)) void NAME(scan_fwd_task)(const T *restrict x, const T *restrict dt, const T *restrict A,
                                const T *restrict B, const T *restrict C, const T *restrict D, T *restrict y,
                                int64_t row, int64_t c0, int64_t kb, int64_t l, int64_t d, int64_t n,
                                T *restrict work) {
    T *restrict At = work, *restrict h = work + n * LANES;
    T dtv[LANES], uv[LANES], acc[LANES];
    NAME(block_A)(At, A, c0, kb, n);
    memset(h, 0, sizeof(T) * n * LANES);
    for (int64_t t = 0; t < l; t++) {
        const int64_t at = (row * l + t) * d + c0, bt = (row * l + t) * n;
        NAME(lanes)(dtv, dt + at, kb);
        NAME(lanes)(uv, x + at, kb);
        for (int64_t k = 0; k < LANES; k++) uv[k] *= dtv[k], acc[k] = 0;
        for (int64_t j = 0; j < n; j++) {
            const T bj = B[bt + j], cj = C[bt + j];
            T *restrict hj = h + j * LANES;
            const T *restrict Aj = At + j * LANES;
#pragma omp simd
            for (int64_t k = 0; k < LANES; k++) {
                hj[k] = EXP(dtv[k] * Aj[k]) * hj[k] + uv[k] * bj;
                acc[k] += hj[k] * cj;
            }
        }
        for (int64_t k = 0; k < kb; k++) y[at + k] = acc[k] + D[c0 + k] * x[at + k];
    }
}

/* The states are recomputed into `hs` (l + 1 steps of n x LANES, step 0 = zeros) and their decays into `es`
 * (l steps) instead of being kept from the forward ([l, rows, d, n] per layer), then the adjoint lam_t = C_t dy_t + exp(dt_{t+1} A) lam_{t+1} runs right to left; the gradients of
 * A, B and C are added to gA, gB, gC. */
static inline __attribute__((always_inline)) void NAME(scan_bwd_task)(const T *restrict x, const T *restrict dt, const T *restrict A,
                                const T *restrict B, const T *restrict C, const T *restrict D,
                                const T *restrict dy, T *restrict gx, T *restrict gdt, T *restrict gA,
                                T *restrict gB, T *restrict gC, int64_t row, int64_t c0, int64_t kb, int64_t l,
                                int64_t d, int64_t n, T *restrict work) {
    const int64_t state = n * LANES;
    T *restrict At = work, *restrict gAt = work + state, *restrict lam = work + 2 * state;
    T *restrict decay = work + 3 * state, *restrict hs = work + 4 * state, *restrict es = hs + (l + 1) * state;
    T dtv[LANES], uv[LANES], dyv[LANES], g_u[LANES], g_log[LANES];
    NAME(block_A)(At, A, c0, kb, n);
    memset(hs, 0, sizeof(T) * state);
    for (int64_t t = 0; t < l; t++) {
        const int64_t at = (row * l + t) * d + c0, bt = (row * l + t) * n;
        NAME(lanes)(dtv, dt + at, kb);
        NAME(lanes)(uv, x + at, kb);
        for (int64_t k = 0; k < LANES; k++) uv[k] *= dtv[k];
        for (int64_t j = 0; j < n; j++) {
            const T bj = B[bt + j];
            const T *restrict prev = hs + t * state + j * LANES, *restrict Aj = At + j * LANES;
            T *restrict hj = hs + (t + 1) * state + j * LANES, *restrict ej = es + t * state + j * LANES;
#pragma omp simd
            for (int64_t k = 0; k < LANES; k++) {
                ej[k] = EXP(dtv[k] * Aj[k]);
                hj[k] = ej[k] * prev[k] + uv[k] * bj;
            }
        }
    }
    memset(gAt, 0, sizeof(T) * state);
    memset(lam, 0, sizeof(T) * state);
    memset(decay, 0, sizeof(T) * state); /* nothing flows back from past the last step */
    for (int64_t t = l - 1; t >= 0; t--) {
        const int64_t at = (row * l + t) * d + c0, bt = (row * l + t) * n;
        NAME(lanes)(dtv, dt + at, kb);
        NAME(lanes)(uv, x + at, kb);
        NAME(lanes)(dyv, dy + at, kb);
        for (int64_t k = 0; k < LANES; k++) uv[k] *= dtv[k], g_u[k] = 0, g_log[k] = 0;
        for (int64_t j = 0; j < n; j++) {
            const T bj = B[bt + j], cj = C[bt + j];
            const T *restrict hj = hs + (t + 1) * state + j * LANES, *restrict prev = hs + t * state + j * LANES;
            const T *restrict Aj = At + j * LANES, *restrict et = es + t * state + j * LANES;
            T *restrict lj = lam + j * LANES, *restrict ej = decay + j * LANES, *restrict gAj = gAt + j * LANES;
            T sum_c = 0, sum_b = 0;
#pragma omp simd reduction(+ : sum_c, sum_b)
            for (int64_t k = 0; k < LANES; k++) {
                const T l_k = dyv[k] * cj + ej[k] * lj[k]; /* dL/dh_t */
                const T e = et[k];
                const T g = l_k * prev[k] * e; /* d h_t / d(dt_t A) = decay_t * h_{t-1} */
                lj[k] = l_k;
                ej[k] = e;
                sum_c += dyv[k] * hj[k];
                sum_b += uv[k] * l_k;
                g_u[k] += l_k * bj;
                g_log[k] += g * Aj[k];
                gAj[k] += g * dtv[k];
            }
            gC[bt + j] += sum_c;
            gB[bt + j] += sum_b;
        }
        for (int64_t k = 0; k < kb; k++) {
            gx[at + k] = g_u[k] * dtv[k] + dyv[k] * D[c0 + k];
            gdt[at + k] = g_log[k] + g_u[k] * x[at + k];
        }
    }
    for (int64_t k = 0; k < kb; k++)
        for (int64_t j = 0; j < n; j++) gA[(c0 + k) * n + j] += gAt[j * LANES + k];
}

/* Entry points: tasks [task0, task1) of rows x channel blocks (task = row * blocks + block); the Python side
 * splits the tasks across threads (ctypes releases the GIL). `work` is the calling thread's scratch memory. */
EXPORT void NAME(scan_fwd)(const T *x, const T *dt, const T *A, const T *B, const T *C, const T *D, T *y, int64_t l,
                           int64_t d, int64_t n, int64_t task0, int64_t task1, T *work) {
    const int64_t blocks = (d + LANES - 1) / LANES;
    for (int64_t task = task0; task < task1; task++) {
        const int64_t row = task / blocks, c0 = (task % blocks) * LANES;
        NAME(scan_fwd_task)(x, dt, A, B, C, D, y, row, c0, d - c0 < LANES ? d - c0 : LANES, l, d, n, work);
    }
}

/* `work` starts with the calling thread's gradient sums, zero on entry: gA [d, n], then gB and gC [rows, l, n]
 * (the caller adds the threads'); the task scratch follows them. */
EXPORT void NAME(scan_bwd)(const T *x, const T *dt, const T *A, const T *B, const T *C, const T *D, const T *dy,
                           T *gx, T *gdt, int64_t rows, int64_t l, int64_t d, int64_t n, int64_t task0,
                           int64_t task1, T *work) {
    const int64_t blocks = (d + LANES - 1) / LANES;
    T *gA = work, *gB = gA + d * n, *gC = gB + rows * l * n, *scratch = gC + rows * l * n;
    for (int64_t task = task0; task < task1; task++) {
        const int64_t row = task / blocks, c0 = (task % blocks) * LANES;
        NAME(scan_bwd_task)(x, dt, A, B, C, D, dy, gx, gdt, gA, gB, gC, row, c0, d - c0 < LANES ? d - c0 : LANES, l,
                            d, n, scratch);
    }
}
