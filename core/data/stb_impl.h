/* cbnet's one compilation of Debian's stb_image and stb_image_write
 * (stb_impl.c: formats, allocation cap, zeroed allocations). */
#ifndef CB_STB_IMPL_H
#define CB_STB_IMPL_H

/* Forgets stb_image's last failure reason on this thread (it keeps one per
 * thread, never reset). Some of its failures give none of their own (a PNG
 * whose compressed data stops short reports an empty one), and one that sets
 * none would report an earlier failure's: cleared before each call, such a
 * failure reads as no reason, which image_folder.c words itself. */
void cb_stb_clear_failure(void);

#endif
