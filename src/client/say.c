/* client/say: see say.h. */
#include "client/say.h"

#include <stdarg.h>
#include <stdio.h>
#include <unistd.h>

void fmc_say(const char *who, const char *fmt, ...)
{
	char line[512];
	va_list ap;
	int n = snprintf(line, sizeof(line), "%s[%d]: ", who, (int)getpid());

	va_start(ap, fmt);
	n += vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
	va_end(ap);
	if (n > (int)sizeof(line) - 2)
		n = (int)sizeof(line) - 2;
	line[n++] = '\n';
	if (write(2, line, (size_t)n) < 0) {
		/* nowhere else to say it */
	}
}
