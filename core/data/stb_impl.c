/* The single compilation of Debian's stb_image / stb_image_write (libstb-dev),
 * restricted to the formats cbnet reads and writes. Kept apart so that their
 * warnings and macros stay out of cbnet's own files. */
#define STB_IMAGE_IMPLEMENTATION
#define STBI_ONLY_JPEG
#define STBI_ONLY_PNG
#define STBI_ONLY_BMP
#define STB_IMAGE_WRITE_IMPLEMENTATION

/* stb_image sizes some buffers from lengths the file claims (a PNG chunk
 * header can ask for 2 GiB in a 100-byte file) before it finds the data is
 * missing. cbnet decodes at most 2^26 pixels (256 MiB as RGBA), so a single
 * allocation above 512 MiB can only come from a lying file: refuse it and
 * stb reports "outofmem" as a decoding error. */
#include <stdlib.h>
#define STB_MAX_ALLOCATION ((size_t)512 << 20)
/* Zeroed, too: stb_image leaves parts of its decoder state unset where a
 * file leaves them undefined (a JPEG's Huffman or quantization tables), and
 * would decode with whatever the heap held there (image_folder.c refuses
 * the Huffman case; this keeps the rest deterministic). */
static void *stb_capped_malloc(size_t size) {
  return size > STB_MAX_ALLOCATION ? NULL : calloc(1, size);
}
static void *stb_capped_realloc(void *p, size_t size) {
  return size > STB_MAX_ALLOCATION ? NULL : realloc(p, size);
}
#define STBI_MALLOC(size) stb_capped_malloc(size)
#define STBI_REALLOC(p, size) stb_capped_realloc(p, size)
#define STBI_FREE(p) free(p)
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wunused-parameter"
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wshadow"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wimplicit-fallthrough"
#include <stb/stb_image.h>
#include <stb/stb_image_write.h>

#include "data/stb_impl.h"

void cb_stb_clear_failure(void) { stbi__g_failure_reason = NULL; }
