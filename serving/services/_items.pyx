# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The compiled core of the read path: a stored list, fresh articles merged in, rendered as items.

`render_items` does what `Recommender._ranked` and `Recommender._items` do together in Python
(score the fresh articles against the user vector, merge them into the stored ranking by score,
skip articles without metadata, render the first k as JSON) in one pass over C arrays. In the
server this was the largest share of a request's CPU (bench/README.md, third round), mostly the
interpreter: per-item generator steps, tuples, numpy's dispatch for an 8 x 128 product.

Same results as the Python path, which stays the reference and the fallback where this module is
not compiled (tests/test_compiled_items.py holds the two to each other), except in the last bits of a
fresh article's score: the dot product accumulates in double precision here, float32 in numpy.
"""

from cpython.buffer cimport PyBUF_C_CONTIGUOUS, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.dict cimport PyDict_GetItem
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from cpython.object cimport PyObject
from libc.stdio cimport snprintf
from libc.stdlib cimport qsort
from libc.string cimport memcpy

from orjson import dumps as _dumps


cdef struct Fresh:
    double score
    Py_ssize_t index


cdef int _best_first(const void *a, const void *b) noexcept nogil:
    # Higher score first; equal scores keep their input order (qsort itself is not stable).
    cdef const Fresh *x = <const Fresh *> a
    cdef const Fresh *y = <const Fresh *> b
    if x.score > y.score:
        return -1
    if x.score < y.score:
        return 1
    return (x.index > y.index) - (x.index < y.index)


cdef struct Buffer:
    char *data
    Py_ssize_t size
    Py_ssize_t capacity


cdef int _append(Buffer *out, const char *data, Py_ssize_t size) except -1:
    cdef Py_ssize_t capacity
    cdef char *grown
    if out.size + size > out.capacity:
        capacity = max(2 * out.capacity, out.size + size)
        grown = <char *> PyMem_Realloc(out.data, capacity)
        if grown == NULL:
            raise MemoryError()
        out.data = grown
        out.capacity = capacity
    memcpy(out.data + out.size, data, size)
    out.size += size
    return 0


cdef int _append_item(
    Buffer *out, Py_ssize_t rank, object fragment, double score, bint fresh
) except -1:
    cdef char number[32]
    cdef bytes text
    if rank > 1:
        _append(out, b",", 1)
    _append(out, b'{"rank":', 8)
    _append(out, number, snprintf(number, sizeof(number), b"%zd", rank))
    _append(out, b",", 1)
    _append(out, PyBytes_AS_STRING(fragment), PyBytes_GET_SIZE(fragment))
    _append(out, b',"score":', 9)
    text = _dumps(score)  # orjson: the Python path's float format, and faster than repr
    _append(out, PyBytes_AS_STRING(text), PyBytes_GET_SIZE(text))
    if fresh:
        _append(out, b',"source":"fresh"}', 18)
    else:
        _append(out, b',"source":"stored"}', 19)
    return 0


def render_items(
    tuple stored_ids,
    object stored_scores,
    list fresh_ids,
    object fresh_vectors,
    object user_vector,
    dict fragments,
    Py_ssize_t k,
):
    """`(items, article_ids, fresh_served)` for the first k ranked articles with metadata, or None.

    `stored_ids`/`stored_scores` (float32, C-contiguous): the stored list, best first.
    `fresh_ids` (None: no merge) and `fresh_vectors` (float32, len(fresh_ids) x d, C-contiguous):
    articles published after the list was computed, scored against `user_vector` (float32, d).
    `fragments` maps article ids to their rendered metadata (bytes) or None (no metadata: skipped).
    `items` is the JSON array's members, comma-separated, without brackets.
    None means a candidate is not in `fragments` (not cached yet): the caller looks it up and
    takes the Python path.
    """
    cdef Py_buffer scores_view, vectors_view, user_view
    cdef Py_ssize_t n_stored = len(stored_ids)
    cdef Py_ssize_t n_fresh = 0 if fresh_ids is None else len(fresh_ids)
    cdef Py_ssize_t dim = 0, i = 0, j = 0, count = 0, fresh_served = 0, d
    cdef Fresh *fresh = NULL
    cdef const float *scores
    cdef const float *vectors
    cdef const float *user
    cdef double score, total
    cdef bint take_fresh
    cdef PyObject *found
    cdef Buffer out
    cdef list served = []
    cdef set seen = None
    cdef object article_id, fragment

    PyObject_GetBuffer(stored_scores, &scores_view, PyBUF_C_CONTIGUOUS)
    out.data = NULL
    out.size = out.capacity = 0
    try:
        if scores_view.itemsize != 4 or scores_view.len // 4 != n_stored:
            raise ValueError("stored_scores must be float32, one per stored id")
        scores = <const float *> scores_view.buf
        if n_fresh:
            PyObject_GetBuffer(fresh_vectors, &vectors_view, PyBUF_C_CONTIGUOUS)
            try:
                PyObject_GetBuffer(user_vector, &user_view, PyBUF_C_CONTIGUOUS)
                try:
                    dim = user_view.len // 4
                    if (
                        vectors_view.itemsize != 4
                        or user_view.itemsize != 4
                        or vectors_view.len // 4 != n_fresh * dim
                    ):
                        raise ValueError("fresh_vectors must be float32, len(fresh_ids) x len(user_vector)")
                    vectors = <const float *> vectors_view.buf
                    user = <const float *> user_view.buf
                    fresh = <Fresh *> PyMem_Malloc(n_fresh * sizeof(Fresh))
                    if fresh == NULL:
                        raise MemoryError()
                    for j in range(n_fresh):
                        total = 0.0
                        for d in range(dim):
                            total += <double> vectors[j * dim + d] * <double> user[d]
                        fresh[j].score = total
                        fresh[j].index = j
                finally:
                    PyBuffer_Release(&user_view)
            finally:
                PyBuffer_Release(&vectors_view)
            qsort(fresh, n_fresh, sizeof(Fresh), _best_first)
            seen = set()
        j = 0
        while count < k:
            # Stored items first while they score at least as high (ties keep stored items first).
            take_fresh = j < n_fresh and (i >= n_stored or <double> scores[i] < fresh[j].score)
            if take_fresh:
                article_id = fresh_ids[fresh[j].index]
                score = fresh[j].score
                j += 1
            elif i < n_stored:
                article_id = stored_ids[i]
                score = scores[i]
                i += 1
            else:
                break
            if seen is not None:
                if article_id in seen:
                    continue  # merged already, at a score at least as high
                seen.add(article_id)
            found = PyDict_GetItem(fragments, article_id)
            if found == NULL:
                return None
            fragment = <object> found
            if fragment is None:
                continue
            count += 1
            _append_item(&out, count, fragment, score, take_fresh)
            served.append(article_id)
            if take_fresh:
                fresh_served += 1
        return PyBytes_FromStringAndSize(out.data, out.size), served, fresh_served
    finally:
        PyBuffer_Release(&scores_view)
        PyMem_Free(fresh)
        PyMem_Free(out.data)
