#include "autograd/autograd.h"

#include <stdlib.h>
#include <string.h>

#include "tensor/iter.h"

struct cb_autograd_meta {
  bool requires_grad; /* set on leaves by the user */
  cb_tensor *grad;    /* accumulated gradient of a leaf */
  cb_node *grad_fn;   /* node that computed this tensor */
};

static _Thread_local bool grad_disabled;

bool cb_grad_enabled(void) { return !grad_disabled; }

bool cb_set_grad_enabled(bool enabled) {
  bool previous = !grad_disabled;
  grad_disabled = !enabled;
  return previous;
}

/* ---- nodes ---- */

static void node_free_saved(cb_node *node) {
  for (int i = 0; i < node->nsaved; i++) {
    cb_tensor_release(node->saved[i]);
    node->saved[i] = NULL;
  }
  free(node->extra);
  node->extra = NULL;
  node->released = true;
}

static void node_release(cb_node *node) {
  /* iterative over chains, so a long graph cannot overflow the C stack */
  while (node && atomic_fetch_sub(&node->refcount, 1) == 1) {
    node_free_saved(node);
    cb_tensor_release(node->pending_grad);
    cb_node *next = NULL;
    for (int i = 0; i < node->ninputs; i++) {
      cb_tensor_release(node->inputs[i].leaf);
      if (!node->inputs[i].node) continue;
      if (!next) next = node->inputs[i].node;
      else node_release(node->inputs[i].node);
    }
    free(node);
    node = next;
  }
}

/* ---- per-tensor state ---- */

static void meta_destroy(struct cb_autograd_meta *meta) {
  cb_tensor_release(meta->grad);
  node_release(meta->grad_fn);
  free(meta);
}

static cb_status meta_of(cb_tensor *t, struct cb_autograd_meta **out) {
  if (!t->autograd) {
    t->autograd = calloc(1, sizeof *t->autograd);
    if (!t->autograd) return cb_fail(CB_ENOMEM, "out of memory (autograd state)");
    t->autograd_destroy = meta_destroy;
  }
  *out = t->autograd;
  return CB_OK;
}

cb_status cb_set_requires_grad(cb_tensor *t, bool requires_grad) {
  if (t->autograd && t->autograd->grad_fn)
    return cb_fail(CB_EINVAL, "requires_grad can only be set on leaf tensors (this one "
                   "was computed by %s); use detach() for a new leaf", t->autograd->grad_fn->name);
  if (requires_grad && t->dtype != CB_FLOAT32)
    return cb_fail(CB_ETYPE, "only float32 tensors can require gradients, not %s",
                   cb_dtype_name(t->dtype));
  struct cb_autograd_meta *meta = NULL;
  cb_status st = meta_of(t, &meta);
  if (st == CB_OK) meta->requires_grad = requires_grad;
  return st;
}

bool cb_requires_grad(const cb_tensor *t) {
  return t->autograd && (t->autograd->requires_grad || t->autograd->grad_fn);
}

bool cb_is_leaf(const cb_tensor *t) { return !t->autograd || !t->autograd->grad_fn; }

cb_tensor *cb_grad(const cb_tensor *t) { return t->autograd ? t->autograd->grad : NULL; }

cb_status cb_set_grad(cb_tensor *t, cb_tensor *grad) {
  if (grad && (!cb_same_shape(grad, t) || grad->dtype != t->dtype)) {
    char a[128], b[128];
    return cb_fail(CB_ESHAPE, "grad: a gradient of shape %s (%s) does not fit a tensor of "
                   "shape %s (%s)", cb_shape_str(a, 128, grad->ndim, grad->shape),
                   cb_dtype_name(grad->dtype), cb_shape_str(b, 128, t->ndim, t->shape),
                   cb_dtype_name(t->dtype));
  }
  if (grad && cb_tensor_overlaps(grad))
    return cb_fail(CB_EINVAL, "grad: an expanded view cannot hold a gradient (its elements "
                   "overlap, and gradients accumulate into it); clone it first");
  if (!grad && !t->autograd) return CB_OK;
  struct cb_autograd_meta *meta = NULL;
  cb_status st = meta_of(t, &meta);
  if (st != CB_OK) return st;
  cb_tensor_release(meta->grad);
  meta->grad = cb_tensor_retain(grad);
  return CB_OK;
}

cb_node *cb_grad_fn(const cb_tensor *t) { return t->autograd ? t->autograd->grad_fn : NULL; }

cb_status cb_detach(cb_tensor **out, const cb_tensor *t) { return cb_tensor_alias(out, t); }

/* ---- recording ---- */

bool cb_needs_record(int n, const cb_tensor *const *inputs) {
  if (grad_disabled) return false;
  for (int i = 0; i < n; i++)
    if (inputs[i] && cb_requires_grad(inputs[i])) return true;
  return false;
}

cb_status cb_record(cb_tensor *out, const char *name, cb_backward_fn backward, int ninputs,
                    const cb_tensor *const *inputs, int nsave, const cb_tensor *const *save,
                    cb_node **node_out) {
  *node_out = NULL;
  if (!cb_needs_record(ninputs, inputs)) return CB_OK;
  if (nsave > CB_NODE_MAX_SAVED)
    return cb_fail(CB_EINVAL, "%s: too many saved tensors", name);
  cb_node *node = calloc(1, sizeof *node + sizeof(struct cb_edge) * (size_t)ninputs);
  if (!node) return cb_fail(CB_ENOMEM, "out of memory (autograd node)");
  atomic_init(&node->refcount, 1);
  node->name = name;
  node->backward = backward;
  node->ninputs = ninputs;
  node->out_ndim = out->ndim;
  memcpy(node->out_shape, out->shape, sizeof node->out_shape);
  for (int i = 0; i < ninputs; i++) {
    const cb_tensor *in = inputs[i];
    struct cb_edge *e = &node->inputs[i];
    if (!in) continue;
    e->ndim = in->ndim;
    memcpy(e->shape, in->shape, sizeof e->shape);
    cb_node *fn = cb_grad_fn(in);
    if (fn) {
      atomic_fetch_add(&fn->refcount, 1);
      e->node = fn;
    } else if (in->autograd && in->autograd->requires_grad) {
      e->leaf = cb_tensor_retain((cb_tensor *)in);
    }
  }
  cb_status st = CB_OK;
  for (int i = 0; i < nsave && st == CB_OK; i++) {
    st = cb_tensor_alias(&node->saved[i], save[i]);
    if (st == CB_OK) node->saved_version[i] = atomic_load(&save[i]->storage->version);
    node->nsaved = i + 1;
  }
  struct cb_autograd_meta *meta = NULL;
  if (st == CB_OK) st = meta_of(out, &meta);
  if (st != CB_OK) {
    node_release(node);
    return st;
  }
  node_release(meta->grad_fn);
  meta->grad_fn = node;
  meta->requires_grad = false;
  *node_out = node;
  return CB_OK;
}

cb_status cb_node_saved(cb_node *node, int i, const cb_tensor **out) {
  if (node->released)
    return cb_fail(CB_EINVAL, "%s: trying to backward through the graph a second time; its "
                   "saved tensors were freed by the first backward", node->name);
  const cb_tensor *t = node->saved[i];
  if (atomic_load(&t->storage->version) != node->saved_version[i])
    return cb_fail(CB_EINVAL, "%s: a tensor needed for the gradient was modified by an "
                   "in-place operation after it was used; use a copy (clone()) there",
                   node->name);
  *out = t;
  return CB_OK;
}

bool cb_node_needs_grad(const cb_node *node, int input) {
  return node->inputs[input].node || node->inputs[input].leaf;
}

cb_tensor *cb_node_grad_so_far(cb_node *node, int input) {
  if (input < 0 || input >= node->ninputs || !node->inputs[input].node) return NULL;
  cb_tensor *so_far = node->inputs[input].node->pending_grad;
  if (!so_far || so_far->dtype != CB_FLOAT32 || !cb_tensor_is_dense(so_far)) return NULL;
  cb_tensor_bump_version(so_far);
  return so_far;
}

cb_status cb_check_inplace(const char *op, const cb_tensor *t) {
  if (grad_disabled || !cb_requires_grad(t)) return CB_OK;
  return cb_fail(CB_EINVAL, "%s: in-place operation on a tensor that requires grad; do it "
                 "inside cbnet.no_grad, or on a copy", op);
}

/* ---- backward ---- */

static void add_row(void *ctx, int64_t n, char **p, const int64_t *s) {
  (void)ctx;
  if (s[0] == sizeof(float) && s[1] == sizeof(float)) { /* the usual case: a vector loop */
    float *acc = (float *)p[0];
    const float *g = (const float *)p[1];
    for (int64_t i = 0; i < n; i++) acc[i] += g[i];
    return;
  }
  for (int64_t i = 0; i < n; i++)
    *(float *)(p[0] + i * s[0]) += *(const float *)(p[1] + i * s[1]);
}

/* *acc += g, taking g over when *acc is empty and g is a dense tensor no one
 * else holds (gradients keep the memory order the kernels gave them). */
static cb_status accumulate(cb_tensor **acc, cb_tensor *g) {
  if (!*acc) {
    if (atomic_load(&g->refcount) == 1 && atomic_load(&g->storage->refcount) == 1 &&
        cb_tensor_is_dense(g)) {
      *acc = cb_tensor_retain(g);
      return CB_OK;
    }
    return cb_tensor_clone(acc, g); /* never alias a gradient someone else holds */
  }
  const cb_tensor *ops[2] = {*acc, g};
  cb_iter it;
  cb_iter_init(&it, 2, ops, (*acc)->ndim, (*acc)->shape);
  cb_iter_run(&it, add_row, NULL);
  cb_tensor_bump_version(*acc);
  return CB_OK;
}

/* Nodes reachable from root, each once, with dependencies counted. */
typedef struct {
  cb_node **items;
  int64_t count, capacity;
} node_list;

static cb_status list_push(node_list *list, cb_node *node) {
  if (list->count == list->capacity) {
    int64_t cap = list->capacity ? list->capacity * 2 : 64;
    cb_node **items = realloc(list->items, sizeof *items * (size_t)cap);
    if (!items) return cb_fail(CB_ENOMEM, "backward: out of memory");
    list->items = items;
    list->capacity = cap;
  }
  list->items[list->count++] = node;
  return CB_OK;
}

static atomic_ullong backward_generation;

/* Depth-first from root: every reachable node once (marked with this
 * backward's generation), counting for each how many edges lead to it. */
static cb_status collect(cb_node *root, node_list *all) {
  unsigned long long generation = atomic_fetch_add(&backward_generation, 1) + 1;
  node_list stack = {0};
  root->visit = generation;
  root->dependencies = 0;
  cb_status st = list_push(all, root);
  if (st == CB_OK) st = list_push(&stack, root);
  while (st == CB_OK && stack.count > 0) {
    cb_node *node = stack.items[--stack.count];
    for (int i = 0; i < node->ninputs && st == CB_OK; i++) {
      cb_node *next = node->inputs[i].node;
      if (!next) continue;
      if (next->visit != generation) {
        next->visit = generation;
        next->dependencies = 0;
        st = list_push(all, next);
        if (st == CB_OK) st = list_push(&stack, next);
      }
      next->dependencies++;
    }
  }
  free(stack.items);
  return st;
}

cb_status cb_backward(cb_tensor *root, const cb_tensor *grad) {
  if (!cb_requires_grad(root))
    return cb_fail(CB_EINVAL, "backward: the tensor does not require grad and has no "
                   "grad_fn (did a parameter miss requires_grad, or was this computed "
                   "under no_grad?)");
  cb_tensor *seed = NULL;
  cb_status st;
  if (grad) {
    if (!cb_same_shape(grad, root)) {
      char a[128], b[128];
      return cb_fail(CB_ESHAPE, "backward: gradient of shape %s for a tensor of shape %s",
                     cb_shape_str(a, 128, grad->ndim, grad->shape),
                     cb_shape_str(b, 128, root->ndim, root->shape));
    }
    st = cb_tensor_to_dtype(&seed, grad, CB_FLOAT32);
  } else {
    if (cb_tensor_numel(root) != 1) {
      char a[128];
      return cb_fail(CB_EINVAL, "backward: the tensor has shape %s; a gradient argument is "
                     "needed unless it has exactly one element",
                     cb_shape_str(a, 128, root->ndim, root->shape));
    }
    st = cb_tensor_full(&seed, root->ndim, root->shape, CB_FLOAT32, 1);
  }
  if (st != CB_OK) return st;
  cb_node *top = cb_grad_fn(root);
  if (!top) { /* a leaf: its gradient is the seed */
    st = accumulate(&root->autograd->grad, seed);
    cb_tensor_release(seed);
    return st;
  }
  /* backward functions compute with ordinary operations: record nothing */
  bool grad_was_enabled = cb_set_grad_enabled(false);
  node_list all = {0};
  if ((st = collect(top, &all)) != CB_OK) {
    cb_set_grad_enabled(grad_was_enabled);
    free(all.items);
    cb_tensor_release(seed);
    return st;
  }
  top->pending_grad = seed;
  /* Kahn's algorithm: a node runs once every consumer has passed its
   * gradient on. */
  node_list ready = {0};
  st = list_push(&ready, top);
  cb_tensor **grad_in = NULL;
  while (st == CB_OK && ready.count > 0) {
    cb_node *node = ready.items[--ready.count];
    cb_tensor *g = node->pending_grad;
    node->pending_grad = NULL;
    if (node->released) {
      st = cb_fail(CB_EINVAL, "%s: trying to backward through the graph a second time; "
                   "its saved tensors were freed by the first backward", node->name);
      cb_tensor_release(g);
      break;
    }
    free(grad_in);
    grad_in = calloc((size_t)node->ninputs, sizeof *grad_in);
    if (!grad_in) {
      cb_tensor_release(g);
      st = cb_fail(CB_ENOMEM, "backward: out of memory");
      break;
    }
    if (g) st = node->backward(node, g, grad_in);
    cb_tensor_release(g);
    node_free_saved(node);
    for (int i = 0; i < node->ninputs; i++) {
      struct cb_edge *e = &node->inputs[i];
      if (st == CB_OK && grad_in[i] && !(grad_in[i]->ndim == e->ndim &&
                                         memcmp(grad_in[i]->shape, e->shape,
                                                sizeof(int64_t) * (size_t)e->ndim) == 0))
        st = cb_fail(CB_ESHAPE, "%s: backward produced a gradient of the wrong shape for "
                     "input %d (internal error)", node->name, i + 1);
      if (st == CB_OK && grad_in[i]) {
        if (e->leaf) st = accumulate(&e->leaf->autograd->grad, grad_in[i]);
        else if (e->node) st = accumulate(&e->node->pending_grad, grad_in[i]);
      }
      cb_tensor_release(grad_in[i]);
      grad_in[i] = NULL;
      if (e->node && --e->node->dependencies == 0 && st == CB_OK)
        st = list_push(&ready, e->node);
    }
  }
  free(grad_in);
  /* on failure, drop gradients still pending */
  for (int64_t i = 0; i < all.count; i++) {
    cb_tensor_release(all.items[i]->pending_grad);
    all.items[i]->pending_grad = NULL;
    all.items[i]->dependencies = 0;
  }
  free(ready.items);
  free(all.items);
  cb_set_grad_enabled(grad_was_enabled);
  return st;
}
