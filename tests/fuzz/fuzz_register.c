/* libFuzzer target: the daemon's decoding and validation of one
 * registration message (ctl/registration.h), as reg_conn_readable and
 * do_register run it, without a socket.
 *
 * Input: byte 0 = descriptor count (low 2 bits) and recvmsg flags (bit 2:
 * MSG_TRUNC, bit 3: MSG_CTRUNC); the rest is the packet. The descriptors
 * are a dummy memfd (mapped here, so the mapping check has something to
 * find) or -1. The same bytes also feed the text parsers (fdinfo, maps). */
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "proto/proto.h"
#include "ctl/registration.h"

#define DUMMY_SIZE (64 * 4096)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int dummy = -1;
static void *dummy_addr;

static void setup(void)
{
	if (dummy >= 0)
		return;
	dummy = memfd_create("fuzz", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (dummy < 0 || ftruncate(dummy, DUMMY_SIZE) < 0)
		abort();
	dummy_addr = mmap(NULL, DUMMY_SIZE, PROT_READ, MAP_SHARED, dummy, 0);
	if (dummy_addr == MAP_FAILED)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fm_reg_req q;
	char why[160];
	int nfds, flags = 0, fds[3] = { -1, -1, -1 };

	if (size < 1)
		return 0;
	setup();
	nfds = data[0] & 3;
	if (data[0] & 4)
		flags |= MSG_TRUNC;
	if (data[0] & 8)
		flags |= MSG_CTRUNC;
	for (int i = 0; i < nfds; i++)
		fds[i] = (data[0] >> (4 + i)) & 1 ? dummy : -1;
	data++;
	size--;

	if (reg_decode(data, size, flags, nfds, &q, why, sizeof(why)) == 0 &&
	    q.type == FM_REG_REGISTER) {
		/* Point a request at our mapping half the time, so the
		 * checks past the field checks run too. */
		if (q.reserved & 1) {
			q.addr = (uint64_t)(uintptr_t)dummy_addr;
			q.size = q.size % (DUMMY_SIZE + 4096);
		}
		if (reg_check_fields(&q, nfds, 1ull << 40, why, sizeof(why)) == 0) {
			(void)reg_check_uffd(fds[0], why, sizeof(why));
			if (reg_check_memfd(fds[1], q.size, why, sizeof(why)) == 0)
				(void)reg_check_mapping(getpid(), fds[0], fds[1], q.addr, q.size, why,
							sizeof(why));
		}
		if (memchr(why, '\0', sizeof(why)) == NULL)
			abort();   /* a reason must always be a C string */
	}

	/* The text parsers behind the checks, on the same bytes. */
	char *text = malloc(size + 1);
	uint64_t feat;
	struct stat st;

	if (!text)
		return 0;
	memcpy(text, data, size);
	text[size] = '\0';
	(void)reg_uffd_features_parse(text, &feat);
	if (fstat(dummy, &st) == 0)
		(void)reg_maps_cover(text, st.st_dev, st.st_ino, 0x1000, 0x4000);
	(void)reg_maps_cover(text, 1, 77, 0, UINT64_MAX);
	free(text);
	return 0;
}
