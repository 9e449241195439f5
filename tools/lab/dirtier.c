/*
 * dirtier: the lab guest's workload and its own memory-integrity witness.
 *
 * Runs as the only program of a busybox initramfs.  It allocates a working
 * set of DIRTY_MB megabytes, rewrites it at DIRTY_RATE MB/s and checks it
 * at CHECK_RATE MB/s.  Every page holds a pattern derived from (page index,
 * generation), and a shadow table kept apart from the page holds the
 * generation and a checksum of the page.  A page whose contents disagree
 * with its shadow entry is a page that a migration delivered wrong (for
 * example a write whose dirty bit was lost), so it is counted as bad.
 *
 * Ten times a second it prints one heartbeat line to the console:
 *
 *   HB seq=<n> bad=<pages> written=<bytes> checked=<bytes> ms=<guest ms>
 *
 * The host timestamps these lines as they appear in the serial log; the
 * largest gap between two of them is the pause the guest really saw.
 *
 * Settings come from the environment (the kernel passes unknown
 * command-line words such as DIRTY_MB=200 to /init, which exports them).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define PAGE_BYTES 4096u
#define WORDS_PER_PAGE (PAGE_BYTES / sizeof(uint64_t))
#define TICK_NS 100000000ull /* 10 Hz heartbeat */
#define MB 1000000ull

struct shadow {
	uint64_t checksum;
	uint32_t generation;
};

struct workload {
	uint64_t *pages;
	struct shadow *shadows;
	size_t page_count;
	size_t write_cursor;
	size_t check_cursor;
	uint64_t bad_pages;
	uint64_t written_bytes;
	uint64_t checked_bytes;
};

static uint64_t env_u64(const char *name, uint64_t fallback)
{
	const char *text = getenv(name);
	char *end = NULL;
	unsigned long long value;

	if (text == NULL || *text == '\0')
		return fallback;
	errno = 0;
	value = strtoull(text, &end, 10);
	if (errno != 0 || end == text || *end != '\0')
		return fallback;
	return value;
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* The value word `word` of page `page` holds at generation `generation`. */
static inline uint64_t pattern_word(size_t page, uint32_t generation, size_t word)
{
	uint64_t x = ((uint64_t)page << 32) ^ ((uint64_t)generation * 0x9E3779B97F4A7C15ull);

	return x + (uint64_t)word * 0xD6E8FEB86659FD93ull;
}

static inline uint64_t mix(uint64_t checksum, uint64_t word)
{
	return ((checksum << 7) | (checksum >> 57)) ^ word;
}

static uint64_t page_checksum(const uint64_t *page)
{
	uint64_t checksum = 0;

	for (size_t i = 0; i < WORDS_PER_PAGE; i++)
		checksum = mix(checksum, page[i]);
	return checksum;
}

/* True when the page still matches what was last written to it. */
static int page_intact(const struct workload *w, size_t page)
{
	const uint64_t *words = w->pages + page * WORDS_PER_PAGE;
	const struct shadow *s = &w->shadows[page];

	if (words[0] != pattern_word(page, s->generation, 0))
		return 0;
	return page_checksum(words) == s->checksum;
}

static void write_page(struct workload *w, size_t page)
{
	uint64_t *words = w->pages + page * WORDS_PER_PAGE;
	struct shadow *s = &w->shadows[page];
	uint32_t generation = s->generation + 1;
	uint64_t checksum = 0;

	for (size_t i = 0; i < WORDS_PER_PAGE; i++) {
		uint64_t value = pattern_word(page, generation, i);

		words[i] = value;
		checksum = mix(checksum, value);
	}
	s->generation = generation;
	s->checksum = checksum;
	w->written_bytes += PAGE_BYTES;
}

/* Check one page; a bad page is counted once and then rewritten. */
static void check_page(struct workload *w, size_t page)
{
	if (!page_intact(w, page)) {
		w->bad_pages++;
		printf("BAD page=%zu generation=%u\n", page, w->shadows[page].generation);
		write_page(w, page);
	}
	w->checked_bytes += PAGE_BYTES;
}

static void dirty_pages(struct workload *w, size_t count)
{
	for (size_t i = 0; i < count; i++) {
		size_t page = w->write_cursor;

		/* Verify before overwriting: a lost write would otherwise be hidden. */
		check_page(w, page);
		write_page(w, page);
		w->write_cursor = (page + 1) % w->page_count;
	}
}

static void check_pages(struct workload *w, size_t count)
{
	for (size_t i = 0; i < count; i++) {
		check_page(w, w->check_cursor);
		w->check_cursor = (w->check_cursor + 1) % w->page_count;
	}
}

static int allocate(struct workload *w, uint64_t dirty_mb)
{
	size_t bytes;

	w->page_count = (size_t)(dirty_mb * MB / PAGE_BYTES);
	if (w->page_count == 0)
		w->page_count = 1;
	bytes = w->page_count * PAGE_BYTES;
	w->pages = mmap(NULL, bytes, PROT_READ | PROT_WRITE,
			MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	w->shadows = calloc(w->page_count, sizeof(*w->shadows));
	if (w->pages == MAP_FAILED || w->shadows == NULL) {
		printf("FATAL cannot allocate %llu MB\n", (unsigned long long)dirty_mb);
		return -1;
	}
	for (size_t page = 0; page < w->page_count; page++)
		write_page(w, page);
	return 0;
}

static void sleep_until(uint64_t deadline_ns)
{
	uint64_t now = now_ns();
	struct timespec ts;

	if (deadline_ns <= now)
		return;
	ts.tv_sec = (time_t)((deadline_ns - now) / 1000000000ull);
	ts.tv_nsec = (long)((deadline_ns - now) % 1000000000ull);
	nanosleep(&ts, NULL);
}

int main(void)
{
	uint64_t dirty_mb = env_u64("DIRTY_MB", 200);
	uint64_t dirty_rate_mb_s = env_u64("DIRTY_RATE", 40);
	uint64_t check_rate_mb_s = env_u64("CHECK_RATE", 20);
	uint64_t pages_per_tick = dirty_rate_mb_s * MB / PAGE_BYTES / 10;
	uint64_t checks_per_tick = check_rate_mb_s * MB / PAGE_BYTES / 10;
	struct workload w;
	uint64_t start_ns, next_ns, seq = 0;

	memset(&w, 0, sizeof(w));
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (allocate(&w, dirty_mb) != 0)
		return 1;
	printf("READY pages=%zu dirty_mb=%llu dirty_rate=%llu check_rate=%llu\n",
	       w.page_count, (unsigned long long)dirty_mb,
	       (unsigned long long)dirty_rate_mb_s, (unsigned long long)check_rate_mb_s);
	start_ns = now_ns();
	next_ns = start_ns;
	for (;;) {
		dirty_pages(&w, pages_per_tick);
		check_pages(&w, checks_per_tick);
		printf("HB seq=%llu bad=%llu written=%llu checked=%llu ms=%llu\n",
		       (unsigned long long)seq++, (unsigned long long)w.bad_pages,
		       (unsigned long long)w.written_bytes,
		       (unsigned long long)w.checked_bytes,
		       (unsigned long long)((now_ns() - start_ns) / 1000000ull));
		next_ns += TICK_NS;
		/* After a pause (migration, throttling) do not try to catch up. */
		if (now_ns() > next_ns + TICK_NS)
			next_ns = now_ns();
		sleep_until(next_ns);
	}
}
