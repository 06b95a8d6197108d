#include "kv/codec.h"

#include "base/base.h"

#include <errno.h>
#include <lz4.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

/* zstd level 1: measured about 3x lz4's encode time for 10-20% better
 * ratio on text; higher levels cost more than the page fault they serve. */
#define CODEC_ZSTD_LEVEL 1

struct kv_codec {
	enum kv_enc enc;
	ZSTD_CCtx *zc;
	ZSTD_DCtx *zd;
	/* lz4 and zstd may need a little more than a page for a page that
	 * does not compress; encode there, then keep it or go raw. */
	uint8_t scratch[FM_PAGE_SIZE + 512];
};

struct kv_codec *kv_codec_create(enum kv_enc enc)
{
	struct kv_codec *c;

	if ((unsigned)enc >= KV_ENC_NR) {
		errno = EINVAL;
		return NULL;
	}
	c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	c->enc = enc;
	/* Decoders for every encoding: a store reopened with another setting
	 * still reads what it wrote before. */
	c->zd = ZSTD_createDCtx();
	if (enc == KV_ENC_ZSTD)
		c->zc = ZSTD_createCCtx();
	if (!c->zd || (enc == KV_ENC_ZSTD && !c->zc)) {
		kv_codec_destroy(c);
		errno = ENOMEM;
		return NULL;
	}
	if (c->zc)
		ZSTD_CCtx_setParameter(c->zc, ZSTD_c_compressionLevel, CODEC_ZSTD_LEVEL);
	return c;
}

void kv_codec_destroy(struct kv_codec *c)
{
	if (!c)
		return;
	ZSTD_freeCCtx(c->zc);
	ZSTD_freeDCtx(c->zd);
	free(c);
}

_Static_assert(LZ4_COMPRESSBOUND(FM_PAGE_SIZE) <= FM_PAGE_SIZE + 512, "lz4 scratch too small");

uint32_t kv_codec_encode(struct kv_codec *c, const void *page, void *out, size_t min_saving,
			 uint8_t *enc)
{
	size_t n = 0;
	size_t limit = FM_PAGE_SIZE > min_saving ? FM_PAGE_SIZE - min_saving : 0;

	if (c->enc == KV_ENC_LZ4) {
		int r = LZ4_compress_default(page, (char *)c->scratch, FM_PAGE_SIZE,
					     (int)sizeof(c->scratch));
		n = r > 0 ? (size_t)r : SIZE_MAX;
	} else if (c->enc == KV_ENC_ZSTD) {
		n = ZSTD_compress2(c->zc, c->scratch, sizeof(c->scratch), page, FM_PAGE_SIZE);
		if (ZSTD_isError(n))
			n = SIZE_MAX;
	}
	if (c->enc != KV_ENC_RAW && n <= limit) {
		memcpy(out, c->scratch, n);
		*enc = (uint8_t)c->enc;
		return (uint32_t)n;
	}
	memcpy(out, page, FM_PAGE_SIZE);
	*enc = KV_ENC_RAW;
	return FM_PAGE_SIZE;
}

int kv_codec_decode(struct kv_codec *c, uint8_t enc, const void *in, uint32_t len, void *page)
{
	switch (enc) {
	case KV_ENC_RAW:
		if (len != FM_PAGE_SIZE)
			return -EIO;
		memcpy(page, in, FM_PAGE_SIZE);
		return 0;
	case KV_ENC_LZ4:
		return LZ4_decompress_safe(in, page, (int)len, FM_PAGE_SIZE) == FM_PAGE_SIZE ? 0
											   : -EIO;
	case KV_ENC_ZSTD: {
		size_t r = ZSTD_decompressDCtx(c->zd, page, FM_PAGE_SIZE, in, len);

		return !ZSTD_isError(r) && r == FM_PAGE_SIZE ? 0 : -EIO;
	}
	default:
		return -EIO;
	}
}
