/* Indexing by tensors, masks, and joining tensors.
 *
 * Index tensors are int64 and hold 0-based positions, as PyTorch's do (and as
 * class labels 0..C-1 do); the Lua binding's 1-based convention covers
 * positions given as Lua numbers, not the contents of tensors. */
#ifndef CB_INDEX_H
#define CB_INDEX_H

#include "tensor/tensor.h"

/* out[..., i, ...] = a[..., index[i], ...] along dim; index is 1-D. */
cb_status cb_index_select(cb_tensor **out, const cb_tensor *a, int dim,
                          const cb_tensor *index);
/* out has index's shape; out[i][j] = a[i][index[i][j]] for dim 1 (likewise
 * for other dims); index.size(d) <= a.size(d) for d != dim. */
cb_status cb_gather(cb_tensor **out, const cb_tensor *a, int dim,
                    const cb_tensor *index);
/* self[i][index[i][j]] += src[i][j] (dim 1), in place; src at least as large
 * as index in every dim. */
cb_status cb_scatter_add_(cb_tensor *self, int dim, const cb_tensor *index,
                          const cb_tensor *src);
/* self[i][index[i][j]] = src[i][j] (dim 1), in place, in index order (the
 * last write to an element wins). */
cb_status cb_scatter_(cb_tensor *self, int dim, const cb_tensor *index, const cb_tensor *src);
/* A copy of a with value where mask (broadcast to a) is non-zero. */
cb_status cb_masked_fill(cb_tensor **out, const cb_tensor *a, const cb_tensor *mask,
                         double value);
/* Where mask (broadcast to self) is non-zero, set value; in place. */
cb_status cb_masked_fill_(cb_tensor *self, const cb_tensor *mask, double value);
/* The elements of a where mask is non-zero, broadcast together, as 1-D. */
cb_status cb_masked_select(cb_tensor **out, const cb_tensor *a,
                           const cb_tensor *mask);
/* Joins along an existing dim (cat) or a new one (stack). */
cb_status cb_cat(cb_tensor **out, int n, const cb_tensor *const *ts, int dim);
cb_status cb_stack(cb_tensor **out, int n, const cb_tensor *const *ts, int dim);

#endif
