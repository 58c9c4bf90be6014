/* Shared by the readers: the dataset life cycle. */
#include <stdlib.h>
#include <string.h>

#include "data/data.h"

void cb_dataset_free(cb_dataset *ds) {
  if (!ds) return;
  cb_tensor_release(ds->images);
  cb_tensor_release(ds->labels);
  for (int i = 0; i < ds->num_classes && ds->class_names; i++) free(ds->class_names[i]);
  free(ds->class_names);
  memset(ds, 0, sizeof *ds);
}
