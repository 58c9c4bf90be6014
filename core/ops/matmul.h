/* Matrix products through OpenBLAS sgemm, with torch.matmul's semantics:
 * 1-D x 1-D is a dot product, 2-D x 2-D a matrix product, a 1-D operand is
 * treated as a row (left) or column (right) vector, and leading batch dims
 * broadcast. float32 only. */
#ifndef CB_MATMUL_H
#define CB_MATMUL_H

#include "tensor/tensor.h"

cb_status cb_matmul(cb_tensor **out, const cb_tensor *a, const cb_tensor *b);

#endif
