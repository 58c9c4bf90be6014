/* Reverse-mode automatic differentiation.
 *
 * A float32 tensor may require gradients. Every differentiable operation
 * applied to such a tensor (while grad mode is on) records a node holding
 * its backward function, the tensors it saved and edges to its inputs' nodes
 * (or, for leaves, to the leaf tensors themselves). cb_backward() walks the
 * graph from a root in reverse topological order, accumulating into the
 * leaves' .grad, and frees every node's saved tensors as it goes (so a
 * second backward through the same graph is an error, as in PyTorch).
 *
 * Saved tensors are detached aliases (no autograd state), so a node never
 * keeps its own output's node alive: the graph has no cycles. Each saved
 * tensor remembers its storage's version; an in-place write after saving
 * makes backward fail with a clear error instead of a wrong gradient.
 *
 * Kernels (the layer above) record their nodes with cb_record(). */
#ifndef CB_AUTOGRAD_H
#define CB_AUTOGRAD_H

#include "tensor/tensor.h"

typedef struct cb_node cb_node;

/* grad_out has the node's output shape. Writes one gradient per input,
 * shaped like that input, into grad_in[i] for every i with
 * cb_node_needs_grad(node, i); leaves the others NULL. */
typedef cb_status (*cb_backward_fn)(cb_node *node, const cb_tensor *grad_out,
                                    cb_tensor **grad_in);

#define CB_NODE_MAX_SAVED 8 /* conv2d + batch norm + ReLU + pooling: x, w, the convolution's
                            * output, mean, invstd, the windows (2), gamma */
/* Room for an op's own backward state (see CB_NODE_CTX). */
#define CB_NODE_CTX_BYTES 192

struct cb_node {
  atomic_int refcount;
  const char *name; /* e.g. "MulBackward" */
  cb_backward_fn backward;
  /* saved for backward: detached aliases, with the version when saved */
  cb_tensor *saved[CB_NODE_MAX_SAVED];
  unsigned saved_version[CB_NODE_MAX_SAVED];
  int nsaved;
  /* The op's parameters for backward, as the op's own struct: each kernel
   * declares one (e.g. `typedef struct { int dim; bool log; } softmax_ctx;`)
   * and reaches it with CB_NODE_CTX(node, softmax_ctx). */
  _Alignas(16) unsigned char ctx[CB_NODE_CTX_BYTES];
  void *extra; /* op-specific allocation, freed with free() */
  bool released;
  /* the output's shape, to check gradients handed to backward */
  int out_ndim;
  int64_t out_shape[CB_MAX_DIMS];
  /* engine scratch */
  cb_tensor *pending_grad;
  int dependencies;
  unsigned long long visit;
  /* inputs: edge to the input's node, or to the leaf itself */
  int ninputs;
  struct cb_edge {
    cb_node *node;  /* strong reference, or NULL */
    cb_tensor *leaf; /* strong reference to a leaf requiring grad, or NULL */
    int ndim;        /* the input's shape, for checks */
    int64_t shape[CB_MAX_DIMS];
  } inputs[];
};

/* The typed backward state of node: a `type *` into node->ctx. A type that
 * does not fit is a compile error (a negative array size). */
#define CB_NODE_CTX(node, type) \
  ((type *)((node)->ctx + 0 * sizeof(char[sizeof(type) <= CB_NODE_CTX_BYTES ? 1 : -1])))

/* The backward state of the many ops whose only parameter is a dim. */
typedef struct {
  int dim;
} cb_dim_ctx;

/* ---- grad mode (per thread) ---- */
bool cb_grad_enabled(void);
/* Returns the previous setting. */
bool cb_set_grad_enabled(bool enabled);

/* ---- per-tensor state ---- */
/* Only float32 leaves can be set; a tensor computed from ones that require
 * grad requires grad itself. */
cb_status cb_set_requires_grad(cb_tensor *t, bool requires_grad);
bool cb_requires_grad(const cb_tensor *t);
bool cb_is_leaf(const cb_tensor *t);
/* The accumulated gradient of a leaf (borrowed), or NULL. */
cb_tensor *cb_grad(const cb_tensor *t);
/* Replaces (or with NULL clears) a leaf's gradient; takes a reference. */
cb_status cb_set_grad(cb_tensor *t, cb_tensor *grad);
/* The node that computed t, or NULL for leaves and plain tensors. */
cb_node *cb_grad_fn(const cb_tensor *t);
/* A new tensor sharing t's data, outside any graph. */
cb_status cb_detach(cb_tensor **out, const cb_tensor *t);

/* Back-propagates from root. grad is d(loss)/d(root): NULL means 1 for a
 * one-element root (an error for others). */
cb_status cb_backward(cb_tensor *root, const cb_tensor *grad);

/* ---- for operations ---- */
/* Whether recording is needed: grad mode on and some input requires grad. */
bool cb_needs_record(int n, const cb_tensor *const *inputs);
/* Records that out = op(inputs): a node with backward fn, saving the given
 * tensors. Returns the node (borrowed, owned by out) to receive op
 * parameters, or NULL when nothing needs recording. On failure out is left
 * as it was and *node is NULL. */
cb_status cb_record(cb_tensor *out, const char *name, cb_backward_fn backward,
                    int ninputs, const cb_tensor *const *inputs, int nsave,
                    const cb_tensor *const *save, cb_node **node);
/* A saved tensor, or an error if it was modified in place since. */
cb_status cb_node_saved(cb_node *node, int i, const cb_tensor **out);
bool cb_node_needs_grad(const cb_node *node, int input);
/* During backward: the gradient that the nodes run before this one have
 * accumulated for input `input` so far (another consumer of the same
 * tensor: a residual connection's shortcut), when backward may add its own
 * into it in place instead of handing it out: it then leaves grad_in[input]
 * NULL, and the engine's separate pass adding the two (reading both, writing
 * one) is saved. NULL when there is none yet, for a leaf (its .grad is the
 * user's), or when it is not dense float32: backward then hands its
 * gradient out as usual. The engine owns it alone (it clones gradients
 * someone else holds), so adding into it is safe; its version is bumped. */
cb_tensor *cb_node_grad_so_far(cb_node *node, int input);

/* In-place operations refuse tensors that take part in autograd while grad
 * mode is on; op names the operation in the error. */
cb_status cb_check_inplace(const char *op, const cb_tensor *t);

#endif
