/* shard/policy: the page replacement policy of one shard.
 *
 * It works on shard-local page ids (dense uint32, allocated by the shard in
 * stripes of 512). fluidmemd only learns of a page when it faults: accesses
 * to resident pages are invisible from outside the client. A policy
 * therefore sees misses only, and must beat FIFO with that alone: S3-FIFO
 * (small FIFO + main FIFO + ghost history of recently evicted ids) promotes
 * pages that refault soon after eviction, so one-touch pages pass through
 * the small queue and the hot set is protected in main.
 *
 * Not thread-safe: one shard thread owns its policy. No allocation on the
 * fault path: per-page links are preallocated by policy_grow().
 *
 * Ids >= max_pages are ignored by every call (no error path on the fault
 * path); admitting or reinserting an id that is already resident is a
 * no-op. The measured sizing and variant choices are in policy.c. */
#ifndef FM_POLICY_H
#define FM_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* memory.policy: "fifo" | "s3fifo" */
enum fm_policy_kind { FM_POLICY_FIFO, FM_POLICY_S3FIFO };

#define POLICY_NONE UINT32_MAX

struct policy;

/* Page ids are < max_pages. budget: the resident pages this shard may hold
 * (sizes the small queue and the ghost history). NULL + errno on failure
 * (EINVAL: unknown kind or max_pages too large; ENOMEM).
 * S3-FIFO admits straight to main while the resident count is below the
 * budget minus the small share, so budget must be this shard's real limit:
 * a budget the shard never reaches degrades S3-FIFO to FIFO. */
struct policy *policy_create(enum fm_policy_kind kind, uint32_t max_pages, uint64_t budget);
void policy_destroy(struct policy *p);   /* NULL is a no-op */

/* Extend the id space (control path only); a smaller max_pages is a no-op.
 * 0, -ENOMEM (p unchanged), or -EINVAL when max_pages > UINT32_MAX - 3. */
int policy_grow(struct policy *p, uint32_t max_pages);
/* Resizes the small share and the ghost history (trimmed at once, O(trim)).
 * Evicts nothing: the shard evicts down to a smaller budget itself. */
void policy_set_budget(struct policy *p, uint64_t budget);

/* id just became resident through a fault. */
void policy_admit(struct policy *p, uint32_t id);
/* id left residency other than by eviction (discarded, unmapped, region
 * freed) or is about to be reused: forget it, including ghost history. */
void policy_drop(struct policy *p, uint32_t id);
/* Remove and return the next victim (POLICY_NONE when nothing is resident).
 * S3-FIFO remembers victims from the small queue in the ghost history;
 * victims from main are forgotten (see policy.c for why). */
uint32_t policy_victim(struct policy *p);
/* Whether resident id is as good a victim as the policy's own: in small
 * (never proved hot), or in the older half of main. Eviction takes such
 * neighbours of a victim along, so one write-protect and one punch serve a
 * run of pages. False for an id not resident or already taken. */
bool policy_is_cold(const struct policy *p, uint32_t id);
/* Take resident id as a victim now, exactly as if policy_victim() had
 * returned it (small -> ghost history; policy_reinsert puts it back). */
void policy_take(struct policy *p, uint32_t id);
/* The victim could not be evicted (store full): it stays resident, at the
 * head of the queue it was taken from, so the next victim is another id. */
void policy_reinsert(struct policy *p, uint32_t id);

uint64_t policy_resident(const struct policy *p);

/* Where an id is (tests, debugging). FIFO keeps every resident id in MAIN. */
enum policy_queue { POLICY_Q_NONE, POLICY_Q_SMALL, POLICY_Q_MAIN, POLICY_Q_GHOST };
enum policy_queue policy_queue_of(const struct policy *p, uint32_t id);

const char *policy_name(enum fm_policy_kind kind);
/* Bytes of policy metadata per tracked page id (for the bench report). */
size_t policy_bytes_per_page(void);

#endif
