/* The cbnet core: everything a C program (or the Lua binding) includes. */
#ifndef CBNET_H
#define CBNET_H

#define CBNET_VERSION "0.1.0"

#include "autograd.h"
#include "blas.h"
#include "error.h"
#include "generator.h"
#include "index.h"
#include "iter.h"
#include "matmul.h"
#include "pointwise.h"
#include "reduce.h"
#include "tensor.h"
#include "threadpool.h"
#include "views.h"

#endif
