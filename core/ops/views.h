/* Differentiable views and copies: the tensor.h functions of the same name
 * (cb_tensor_view, ...) plus autograd recording. The binding calls these;
 * kernels call the cb_tensor_* forms internally. Arguments as in tensor.h.
 * (Dtype conversion needs no recording: only float32 carries gradients, and
 * cb_tensor_to_dtype returns the tensor itself when the dtype already fits.) */
#ifndef CB_VIEWS_H
#define CB_VIEWS_H

#include "tensor/tensor.h"

cb_status cb_view(cb_tensor **out, const cb_tensor *t, int ndim, const int64_t *shape);
cb_status cb_reshape(cb_tensor **out, const cb_tensor *t, int ndim, const int64_t *shape);
cb_status cb_flatten(cb_tensor **out, const cb_tensor *t, int start_dim, int end_dim);
cb_status cb_squeeze(cb_tensor **out, const cb_tensor *t, int dim);
cb_status cb_squeeze_all(cb_tensor **out, const cb_tensor *t);
cb_status cb_unsqueeze(cb_tensor **out, const cb_tensor *t, int dim);
cb_status cb_transpose(cb_tensor **out, const cb_tensor *t, int dim0, int dim1);
cb_status cb_permute(cb_tensor **out, const cb_tensor *t, const int *dims);
cb_status cb_narrow(cb_tensor **out, const cb_tensor *t, int dim, int64_t start,
                    int64_t length);
cb_status cb_select(cb_tensor **out, const cb_tensor *t, int dim, int64_t index);
cb_status cb_slice(cb_tensor **out, const cb_tensor *t, int dim, int64_t start,
                   int64_t end, int64_t step);
cb_status cb_expand(cb_tensor **out, const cb_tensor *t, int ndim, const int64_t *shape);
cb_status cb_contiguous(cb_tensor **out, const cb_tensor *t);
cb_status cb_clone(cb_tensor **out, const cb_tensor *t);

#endif
