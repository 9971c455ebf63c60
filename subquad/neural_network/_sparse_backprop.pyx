"""The sparse backward pass: the last hidden layer's deltas from the
output error (`output_deltas`), then each layer's backward pass and
optimizer step, fused (`backward_update`).

For a hidden layer ``z = h @ (s * W) + c`` with input activations ``h``
(CSR, batch x m_in) and output deltas ``delta`` (CSR, batch x m_out, the
pattern of the layer's active units), the gradient ``hᵀ delta`` is a sum of
per-sample k_in x k_out blocks. Rows of W are processed in parallel; for row
j, with the samples that use input unit j:

1. the input deltas ``delta_in[i, j] = s * W[j, act(i)] . delta[i, act(i)]``
   are computed from the weights *before* the step;
2. the gradient row ``g = sum_i h[i, j] delta[i, :]`` is accumulated in a
   per-thread sparse accumulator;
3. the optimizer updates W[j, c] and its state only where g has entries.

Each row is owned by one thread, so results do not depend on the thread
count, and the weights are read and written in one pass. Denormal numbers
are flushed to zero meanwhile (see _denormals.pxd). ``s`` is the
layer's weight scale (weight decay multiplies it instead of touching every
weight); stored weights are the true ones divided by ``s``.
"""
from cython cimport floating
from cython.parallel cimport parallel, prange
from libc.math cimport isfinite, sqrt, sqrtf
from libc.stdint cimport int32_t, int64_t
from libc.stdlib cimport free, malloc

from .._denormals cimport flush_denormals, restore_denormals

cdef extern from *:
    """
    #define subquad_prefetch_write(p) __builtin_prefetch((p), 1, 3)
    #define subquad_prefetch_read(p) __builtin_prefetch((p), 0, 3)
    """
    void subquad_prefetch_write(const void* p) noexcept nogil
    void subquad_prefetch_read(const void* p) noexcept nogil

cdef enum:
    SGD = 0
    ADAM = 1
    # Entries ahead to prefetch: the accesses within a row of W are random
    # and independent, so they are latency-bound unless requested early.
    PREFETCH_DISTANCE = 16

# Codes for the `optimizer` argument of backward_update.
OPTIMIZER_SGD = SGD
OPTIMIZER_ADAM = ADAM


def backward_update(
    # input activations, transposed: for W row j, entries col_ptr[j]..col_ptr[j+1]
    const int64_t[::1] col_ptr,
    const int32_t[::1] col_sample,
    const floating[::1] col_value,
    const int64_t[::1] col_position,
    # output deltas, CSR over the batch
    const floating[::1] delta_data,
    const int32_t[::1] delta_indices,
    const int64_t[::1] delta_indptr,
    floating[:, ::1] W,
    floating[:, :, ::1] state,
    floating[::1] delta_in,
    bint want_delta_in,
    int optimizer,
    double scale,
    double learning_rate,
    double momentum,
    bint nesterov,
    double beta_1,
    double beta_2,
    double epsilon,
    int n_threads,
):
    """Fused backward + sparse optimizer step for one hidden layer.

    `state` has shape (m_in, m_out, 1) holding the velocity (SGD) or
    (m_in, m_out, 2) holding Adam's first and second moments side by side,
    so one cache line serves both. For Adam `learning_rate` already holds the bias
    correction. With `want_delta_in`, ``delta_in[col_position[e]]`` receives
    the input delta of transposed entry e. Returns the number of weights
    whose update would have been non-finite (those are left unchanged).
    """
    cdef int64_t m_in = W.shape[0], m_out = W.shape[1]
    cdef int64_t j, e, q, c, t, n_touched, k, ahead
    cdef int32_t i
    cdef floating h, d, dot, g, w_new, s1, s2, update
    cdef floating inv_scale = <floating> (1.0 / scale)
    cdef floating* grad
    cdef int64_t* touched
    cdef int64_t* stamp
    cdef unsigned long long fp_mode
    cdef int64_t n_bad = 0
    cdef int failed = 0
    if m_out == 0:
        return 0
    with nogil, parallel(num_threads=n_threads):
        fp_mode = flush_denormals()
        grad = <floating*> malloc(m_out * sizeof(floating))
        touched = <int64_t*> malloc(m_out * sizeof(int64_t))
        stamp = <int64_t*> malloc(m_out * sizeof(int64_t))
        if stamp != NULL:
            for k in range(m_out):
                stamp[k] = -1
        # One row at a time: the first layer of low-dimensional data has
        # only a few rows to share out.
        for j in prange(m_in, schedule="dynamic"):
            if grad == NULL or touched == NULL or stamp == NULL:
                failed += 1
                continue
            if col_ptr[j] == col_ptr[j + 1]:
                continue
            n_touched = 0
            for e in range(col_ptr[j], col_ptr[j + 1]):
                i = col_sample[e]
                h = col_value[e]
                dot = 0
                for q in range(delta_indptr[i], delta_indptr[i + 1]):
                    if q + PREFETCH_DISTANCE < delta_indptr[i + 1]:
                        subquad_prefetch_read(&W[j, delta_indices[q + PREFETCH_DISTANCE]])
                    c = delta_indices[q]
                    d = delta_data[q]
                    dot = dot + W[j, c] * d
                    if stamp[c] != j:
                        stamp[c] = j
                        grad[c] = 0
                        touched[n_touched] = c
                        n_touched = n_touched + 1
                    grad[c] = grad[c] + h * d
                if want_delta_in:
                    delta_in[col_position[e]] = <floating> scale * dot
            for t in range(n_touched):
                if t + PREFETCH_DISTANCE < n_touched:
                    ahead = touched[t + PREFETCH_DISTANCE]
                    subquad_prefetch_write(&W[j, ahead])
                    subquad_prefetch_write(&state[j, ahead, 0])
                c = touched[t]
                g = grad[c]
                if optimizer == ADAM:
                    s1 = <floating> beta_1 * state[j, c, 0] + <floating> (1 - beta_1) * g
                    s2 = <floating> beta_2 * state[j, c, 1] + <floating> (1 - beta_2) * g * g
                    if floating is float:
                        update = -<floating> learning_rate * s1 / (sqrtf(s2) + <floating> epsilon)
                    else:
                        update = -<floating> learning_rate * s1 / (sqrt(s2) + <floating> epsilon)
                else:
                    s1 = <floating> momentum * state[j, c, 0] - <floating> learning_rate * g
                    s2 = 0
                    if nesterov:
                        update = <floating> momentum * s1 - <floating> learning_rate * g
                    else:
                        update = s1
                w_new = W[j, c] + update * inv_scale
                if isfinite(w_new) and isfinite(s1) and isfinite(s2):
                    W[j, c] = w_new
                    state[j, c, 0] = s1
                    if optimizer == ADAM:
                        state[j, c, 1] = s2
                else:
                    n_bad += 1
        free(grad)
        free(touched)
        free(stamp)
        restore_denormals(fp_mode)
    if failed:
        raise MemoryError("backward_update: could not allocate per-thread accumulators")
    return n_bad


def output_deltas(
    const int64_t[::1] indptr,
    const int32_t[::1] indices,
    const floating[:, ::1] error,
    const floating[:, ::1] W_out,
    floating[::1] delta,
    int n_threads,
):
    """Deltas of the last hidden layer on its active pattern (CSR `indptr`,
    `indices` over the batch): ``delta[e] = error[i] . W_out[indices[e]]``
    for each entry e of row i, with `error` the output error (batch x
    n_outputs). Rows of the batch are processed in parallel."""
    cdef int64_t n = indptr.shape[0] - 1
    cdef int64_t n_outputs = error.shape[1]
    cdef int64_t i, e, k
    cdef int32_t c
    cdef floating dot
    with nogil:
        for i in prange(n, schedule="dynamic", chunksize=8, num_threads=n_threads):
            for e in range(indptr[i], indptr[i + 1]):
                c = indices[e]
                dot = 0
                for k in range(n_outputs):
                    dot = dot + error[i, k] * W_out[c, k]
                delta[e] = dot
