/* Batch assembly with CIFAR-style augmentation, in one pass over the bytes:
 * gather the chosen images (uint8 N x C x H x W), optionally TrivialAugment
 * (data/image_ops.h: one operation per image, on the uint8 image, before
 * the crop), random crop from a zero-padded copy, random horizontal flip,
 * scale and per-channel normalisation, optional cutout; float32
 * N x C x H x W out.
 *
 * The random numbers of a batch are drawn first, image by image in a fixed
 * order, each uniform below a bound (cb_random_below): crop offsets y and x
 * in 0..2*padding (when cropping), flip in 0..1 (when flipping), cutout
 * centre y and x (when cutting out), then TrivialAugment's operation,
 * magnitude bin and sign (when on); the pixels are then written in
 * parallel. A seed thus gives the same batches at
 * any thread count. */
#ifndef CB_AUGMENT_H
#define CB_AUGMENT_H

#include "tensor/generator.h"
#include "tensor/tensor.h"

#define CB_AUGMENT_MAX_CHANNELS 4

typedef struct {
  int64_t crop_padding; /* 0: no random crop */
  bool flip;            /* random horizontal flip, probability 1/2 */
  int64_t cutout;       /* side of a zeroed square (after normalising); 0: none */
  bool trivial_augment; /* one TrivialAugmentWide operation per image */
  double scale;         /* pixel value multiplier, e.g. 1/255 */
  bool normalize;       /* (v * scale - mean[c]) / std[c] */
  double mean[CB_AUGMENT_MAX_CHANNELS], std[CB_AUGMENT_MAX_CHANNELS];
} cb_augment_options;

cb_status cb_augment_batch(cb_tensor **out, const cb_tensor *images, const cb_tensor *indices,
                           const cb_augment_options *options, cb_generator *g);

#endif
