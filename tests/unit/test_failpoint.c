/* Failpoints (src/base/failpoint.h): the switch that error-path tests rely
 * on must refuse typos rather than silently inject nothing. */
#include <criterion/criterion.h>
#include <errno.h>

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
