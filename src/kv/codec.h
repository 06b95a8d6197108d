/* kv/codec: page compression for the local store, one context per handle
 * (store.local.compression). Single-threaded like the handle that owns it;
 * encode and decode allocate nothing after kv_codec_create. */
#ifndef FM_KV_CODEC_H
#define FM_KV_CODEC_H

#include <stddef.h>
#include <stdint.h>

/* How a stored blob is encoded; stored on disk, so the values are fixed. */
enum kv_enc { KV_ENC_RAW = 0, KV_ENC_LZ4 = 1, KV_ENC_ZSTD = 2, KV_ENC_NR };

/* The largest blob encode produces: a page that would not fit in less is
 * kept raw (KV_ENC_RAW, FM_PAGE_SIZE bytes). */
#define KV_CODEC_MAX 4096u

struct kv_codec;
/* enc: the encoding new pages get (KV_ENC_RAW = no compression). NULL and
 * errno ENOMEM/EINVAL on failure. */
struct kv_codec *kv_codec_create(enum kv_enc enc);
void kv_codec_destroy(struct kv_codec *c);
/* Encode one page into out (KV_CODEC_MAX bytes). A page whose encoding
 * would save less than `min_saving` bytes is copied raw. Returns the length
 * and sets *enc. */
uint32_t kv_codec_encode(struct kv_codec *c, const void *page, void *out, size_t min_saving,
			 uint8_t *enc);
/* Decode a blob into one page. 0, or -EIO when the blob is not a valid
 * encoding of exactly one page (never a partly written page on success). */
int kv_codec_decode(struct kv_codec *c, uint8_t enc, const void *in, uint32_t len, void *page);

#endif
