/* Failpoints (src/base/failpoint.h): the switch that error-path tests rely
 * on must refuse typos rather than silently inject nothing. */
#include <criterion/criterion.h>
#include <errno.h>
#include <signal.h>
#include <time.h>

#include "base/failpoint.h"

Test(failpoint, unset_injects_nothing)
{
	cr_assert_eq(fm_failpoint(FM_FP_EVICT_PUNCH), 0);
}

Test(failpoint, named_and_numeric_errnos)
{
	cr_assert_eq(fm_failpoints_parse("evict.punch=EPERM"), 0);
	cr_assert(fm_failpoints_armed);
	cr_assert_eq(fm_failpoint(FM_FP_EVICT_PUNCH), -EPERM);
	cr_assert_eq(fm_failpoints_parse("evict.punch=5"), 0);
	cr_assert_eq(fm_failpoint(FM_FP_EVICT_PUNCH), -5);
}

Test(failpoint, typos_are_errors)
{
	cr_assert_eq(fm_failpoints_parse("evict.punh=EIO"), -EINVAL);
	cr_assert_eq(fm_failpoints_parse("evict.punch"), -EINVAL);
	cr_assert_eq(fm_failpoints_parse("evict.punch=EWHAT"), -EINVAL);
	cr_assert_eq(fm_failpoints_parse("evict.punch=0"), -EINVAL);
	cr_assert_eq(fm_failpoint(FM_FP_EVICT_PUNCH), 0, "a refused spec armed something");
}

Test(failpoint, kill_and_nth_hit)
{
	cr_assert_eq(fm_failpoints_parse("evict.after_put=EIO@3"), 0);
	cr_assert_eq(fm_failpoint(FM_FP_EVICT_AFTER_PUT), 0);
	cr_assert_eq(fm_failpoint(FM_FP_EVICT_AFTER_PUT), 0);
	cr_assert_eq(fm_failpoint(FM_FP_EVICT_AFTER_PUT), -EIO, "fires on the 3rd hit");
	cr_assert_eq(fm_failpoint(FM_FP_EVICT_AFTER_PUT), 0, "and only then");
	cr_assert_eq(fm_failpoints_parse("evict.after_mark=kill@0"), -EINVAL);
	cr_assert_eq(fm_failpoints_parse("evict.after_mark=kill@x"), -EINVAL);
	cr_assert_eq(fm_failpoints_parse("evict.after_mark=kil"), -EINVAL);
	cr_assert_eq(fm_failpoints_parse("evict.after_mark=kill@2"), 0);
	cr_assert_eq(fm_failpoint(FM_FP_EVICT_AFTER_MARK), 0);
}

/* The kill itself: the process dies by SIGKILL at the N-th hit. */
Test(failpoint, kill_raises_sigkill, .signal = SIGKILL)
{
	cr_assert_eq(fm_failpoints_parse("readopt.rebuild=kill@2"), 0);
	(void)fm_failpoint(FM_FP_READOPT_REBUILD);
	(void)fm_failpoint(FM_FP_READOPT_REBUILD);
	cr_assert_fail("still alive after the 2nd hit");
}

/* A delay point sleeps its number in milliseconds, on its N-th hit only
 * with @N, and not at all when unset. */
Test(failpoint, delay_sleeps_milliseconds)
{
	struct timespec a, b;

	clock_gettime(CLOCK_MONOTONIC, &a);
	fm_failpoint_delay(FM_FP_PREFETCH_BEFORE_INSTALL);
	clock_gettime(CLOCK_MONOTONIC, &b);
	cr_assert_lt((b.tv_sec - a.tv_sec) * 1000000000L + (b.tv_nsec - a.tv_nsec), 50000000L,
		     "an unset delay point slept");
	cr_assert_eq(fm_failpoints_parse("dispatch.remove_read=120@2,fault.before_install=1"), 0);
	clock_gettime(CLOCK_MONOTONIC, &a);
	fm_failpoint_delay(FM_FP_DISPATCH_REMOVE_READ);
	clock_gettime(CLOCK_MONOTONIC, &b);
	cr_assert_lt((b.tv_sec - a.tv_sec) * 1000000000L + (b.tv_nsec - a.tv_nsec), 50000000L,
		     "slept before its 2nd hit");
	fm_failpoint_delay(FM_FP_DISPATCH_REMOVE_READ);
	clock_gettime(CLOCK_MONOTONIC, &a);
	cr_assert_geq((a.tv_sec - b.tv_sec) * 1000000000L + (a.tv_nsec - b.tv_nsec), 120000000L,
		      "the 2nd hit slept less than 120 ms");
}
