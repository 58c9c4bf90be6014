/* The cbnet core: everything a C program (or the Lua binding) includes. */
#ifndef CBNET_H
#define CBNET_H

#define CBNET_VERSION "0.1.0"

#include "autograd/autograd.h"
#include "tensor/blas.h"
#include "tensor/error.h"
#include "tensor/generator.h"
#include "ops/index.h"
#include "tensor/iter.h"
#include "ops/matmul.h"
#include "ops/pointwise.h"
#include "ops/reduce.h"
#include "tensor/tensor.h"
#include "tensor/threadpool.h"
#include "ops/views.h"

#endif
