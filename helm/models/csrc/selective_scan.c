/* Mamba's selective scan on the CPU, forward and backward, for float and double:
 *
 *   h_t = exp(dt_t A) * h_{t-1} + dt_t B_t x_t ;  y_t = <C_t, h_t> + D x_t
 *
 * x, dt, y, dy, gx, gdt: [rows, l, d]; A: [d, n]; B, C: [rows, l, n]; D: [d]; all contiguous. Built and loaded
 * by helm/models/cpu_scan.py (compiled on first use with the system C compiler; the PyTorch loop in
 * helm/models/mamba.py is the fallback and the reference the tests compare against). */
#include <math.h>
#include <stdint.h>
#include <string.h>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
/* one binary, the widest vector unit the CPU has, chosen at load time (no -march=native: the cache may be shared
 * by nodes of different generations) */
#define EXPORT __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define EXPORT
#endif

#define LANES 16 /* channels per task: one AVX-512 vector of floats */

#define T float
#define EXP expf
#define NAME(x) x##_f32
#include "selective_scan.h"
#undef T
#undef EXP
#undef NAME

#define T double
#define EXP exp
#define NAME(x) x##_f64
#include "selective_scan.h"

/* the block width, for the caller's buffer shapes */
int64_t scan_lanes(void) { return LANES; }
