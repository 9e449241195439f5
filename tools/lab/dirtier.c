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
 * How it writes (PATTERN):
 *
 *   steady   page after page through the whole working set at DIRTY_RATE
 *            (the default);
 *   bursty   as steady for BURST_ON_MS, then no writes for BURST_OFF_MS,
 *            over and over;
 *   growing  page after page through a region that starts at START_MB and
 *            grows by GROW_MB_S a second up to DIRTY_MB;
 *   random   pages picked at random over the whole working set; HOT_PCT of
 *            the writes go to the first tenth of it (0: uniform).
 *
 * STEP_RATE (MB/s), when set, replaces DIRTY_RATE once the program has run
 * STEP_AT_S seconds: a writer whose rate steps up (or down) mid-migration.
 *
 * An application beside the writer (APP), which reports the service it
 * gets, so that what a migration costs is counted by the guest itself:
 *
 *   none     only the writer and the checker (the default);
 *   cpu      a CPU-bound worker: for the rest of every tick it computes
 *            work units (WORK_ITERS rounds of a hash each) and the
 *            heartbeat carries the total, " work=<units>";
 *   server   a latency-sensitive server loop: requests arrive at REQ_RATE a
 *            second on a fixed schedule, whatever happens to the guest
 *            (open loop: a stall queues them, as clients would), each takes
 *            REQ_ITERS rounds of a hash, and its latency runs from its
 *            scheduled arrival to its completion.  The heartbeat carries
 *            " req=<served> lat=<longest in this tick, us> lh=<i>:<n>,...":
 *            the tick's latencies in buckets, four per power of two of a
 *            microsecond (bucket i holds [(4+i%4)<<(i/4)>>2, next) us).
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

enum pattern { STEADY, BURSTY, GROWING, RANDOM };
enum app { APP_NONE, APP_CPU, APP_SERVER };

#define LAT_BUCKETS 128

struct application {
	enum app kind;
	uint64_t work_iters;
	uint64_t work_units;
	uint64_t req_interval_ns;
	uint64_t req_iters;
	uint64_t next_req_ns;
	uint64_t served;
	uint64_t tick_max_ns;
	uint32_t hist[LAT_BUCKETS];
	uint64_t sink;
};

struct workload {
	enum pattern pattern;
	uint64_t burst_on_ns;
	uint64_t burst_off_ns;
	size_t start_pages;
	uint64_t grow_pages_s;
	uint64_t hot_pct;
	uint64_t rng;
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

static void sleep_until(uint64_t deadline_ns);

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

static uint64_t next_random(struct workload *w)
{
	/* xorshift64*: cheap, and the same sequence on every boot. */
	w->rng ^= w->rng >> 12;
	w->rng ^= w->rng << 25;
	w->rng ^= w->rng >> 27;
	return w->rng * 0x2545F4914F6CDD1Dull;
}

/* How many pages the writer cycles through `elapsed_ns` after it started. */
static size_t active_pages(const struct workload *w, uint64_t elapsed_ns)
{
	uint64_t grown;

	if (w->pattern != GROWING)
		return w->page_count;
	grown = w->start_pages + w->grow_pages_s * (elapsed_ns / 1000000ull) / 1000ull;
	return grown < w->page_count ? (size_t)grown : w->page_count;
}

/* Whether a bursty writer writes at all `elapsed_ns` after it started. */
static int writing(const struct workload *w, uint64_t elapsed_ns)
{
	uint64_t period = w->burst_on_ns + w->burst_off_ns;

	if (w->pattern != BURSTY || period == 0)
		return 1;
	return elapsed_ns % period < w->burst_on_ns;
}

static size_t pick_page(struct workload *w, size_t active)
{
	size_t page, hot = w->page_count / 10;

	if (w->pattern == RANDOM) {
		uint64_t r = next_random(w);

		if (hot > 0 && r % 100 < w->hot_pct)
			return (size_t)((r >> 8) % hot);
		return (size_t)((r >> 8) % w->page_count);
	}
	page = w->write_cursor;
	if (page >= active)
		page = 0;
	w->write_cursor = (page + 1) % active;
	return page;
}

static void dirty_pages(struct workload *w, size_t count, uint64_t elapsed_ns)
{
	size_t active = active_pages(w, elapsed_ns);

	if (!writing(w, elapsed_ns))
		return;
	for (size_t i = 0; i < count; i++) {
		size_t page = pick_page(w, active);

		/* Verify before overwriting: a lost write would otherwise be hidden. */
		check_page(w, page);
		write_page(w, page);
	}
}

static enum pattern parse_pattern(const char *text)
{
	if (text == NULL || strcmp(text, "steady") == 0)
		return STEADY;
	if (strcmp(text, "bursty") == 0)
		return BURSTY;
	if (strcmp(text, "growing") == 0)
		return GROWING;
	if (strcmp(text, "random") == 0)
		return RANDOM;
	printf("FATAL unknown PATTERN=%s (steady, bursty, growing, random)\n", text);
	exit(1);
}

static enum app parse_app(const char *text)
{
	if (text == NULL || strcmp(text, "none") == 0)
		return APP_NONE;
	if (strcmp(text, "cpu") == 0)
		return APP_CPU;
	if (strcmp(text, "server") == 0)
		return APP_SERVER;
	printf("FATAL unknown APP=%s (none, cpu, server)\n", text);
	exit(1);
}

/* `iters` rounds of a hash: the unit of work of both applications. */
static uint64_t crunch(uint64_t seed, uint64_t iters)
{
	uint64_t x = seed | 1;

	for (uint64_t i = 0; i < iters; i++) {
		x ^= x >> 12;
		x ^= x << 25;
		x ^= x >> 27;
	}
	return x;
}

static unsigned latency_bucket(uint64_t ns)
{
	uint64_t us = ns / 1000ull;
	unsigned b;

	if (us == 0)
		return 0;
	b = 63u - (unsigned)__builtin_clzll(us);
	b = b * 4u + (unsigned)(((us << 2) >> b) & 3u);
	return b < LAT_BUCKETS ? b : LAT_BUCKETS - 1;
}

/* Run the application until `deadline_ns` (the next heartbeat). */
static void run_app(struct application *a, uint64_t deadline_ns)
{
	if (a->kind == APP_CPU) {
		while (now_ns() < deadline_ns) {
			a->sink += crunch(a->work_units, a->work_iters);
			a->work_units++;
		}
		return;
	}
	if (a->kind != APP_SERVER)
		return;
	for (;;) {
		uint64_t now = now_ns();

		if (a->next_req_ns <= now) {
			uint64_t latency;

			a->sink += crunch(a->served, a->req_iters);
			latency = now_ns() - a->next_req_ns;
			a->hist[latency_bucket(latency)]++;
			if (latency > a->tick_max_ns)
				a->tick_max_ns = latency;
			a->served++;
			a->next_req_ns += a->req_interval_ns;
			continue;
		}
		if (now >= deadline_ns)
			return;
		sleep_until(a->next_req_ns < deadline_ns ? a->next_req_ns : deadline_ns);
	}
}

/* The application's part of the heartbeat line (the tick's latencies). */
static void print_app(struct application *a)
{
	const char *sep = "";

	if (a->kind == APP_CPU) {
		printf(" work=%llu", (unsigned long long)a->work_units);
		return;
	}
	if (a->kind != APP_SERVER)
		return;
	printf(" req=%llu lat=%llu lh=", (unsigned long long)a->served,
	       (unsigned long long)(a->tick_max_ns / 1000ull));
	for (unsigned i = 0; i < LAT_BUCKETS; i++) {
		if (a->hist[i] == 0)
			continue;
		printf("%s%u:%u", sep, i, a->hist[i]);
		sep = ",";
		a->hist[i] = 0;
	}
	a->tick_max_ns = 0;
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
	uint64_t step_at_ns = env_u64("STEP_AT_S", 0) * 1000000000ull;
	uint64_t step_rate_mb_s = env_u64("STEP_RATE", dirty_rate_mb_s);
	uint64_t step_pages_per_tick = step_rate_mb_s * MB / PAGE_BYTES / 10;
	struct workload w;
	struct application a;
	uint64_t start_ns, next_ns, seq = 0;

	memset(&w, 0, sizeof(w));
	memset(&a, 0, sizeof(a));
	a.kind = parse_app(getenv("APP"));
	a.work_iters = env_u64("WORK_ITERS", 20000);
	a.req_iters = env_u64("REQ_ITERS", 2000);
	a.req_interval_ns = 1000000000ull / (env_u64("REQ_RATE", 200) ? env_u64("REQ_RATE", 200) : 1);
	setvbuf(stdout, NULL, _IOLBF, 0);
	w.pattern = parse_pattern(getenv("PATTERN"));
	w.burst_on_ns = env_u64("BURST_ON_MS", 3000) * 1000000ull;
	w.burst_off_ns = env_u64("BURST_OFF_MS", 3000) * 1000000ull;
	w.start_pages = (size_t)(env_u64("START_MB", 16) * MB / PAGE_BYTES);
	if (w.start_pages == 0)
		w.start_pages = 1;
	w.grow_pages_s = env_u64("GROW_MB_S", 2) * MB / PAGE_BYTES;
	w.hot_pct = env_u64("HOT_PCT", 0);
	w.rng = 0x9E3779B97F4A7C15ull;
	if (allocate(&w, dirty_mb) != 0)
		return 1;
	printf("READY pages=%zu dirty_mb=%llu dirty_rate=%llu check_rate=%llu pattern=%s"
	       " app=%s\n",
	       w.page_count, (unsigned long long)dirty_mb,
	       (unsigned long long)dirty_rate_mb_s, (unsigned long long)check_rate_mb_s,
	       getenv("PATTERN") ? getenv("PATTERN") : "steady",
	       getenv("APP") ? getenv("APP") : "none");
	start_ns = now_ns();
	next_ns = start_ns;
	a.next_req_ns = start_ns;
	for (;;) {
		uint64_t elapsed_ns = now_ns() - start_ns;

		dirty_pages(&w, step_at_ns && elapsed_ns >= step_at_ns ? step_pages_per_tick
			    : pages_per_tick, elapsed_ns);
		check_pages(&w, checks_per_tick);
		printf("HB seq=%llu bad=%llu written=%llu checked=%llu ms=%llu",
		       (unsigned long long)seq++, (unsigned long long)w.bad_pages,
		       (unsigned long long)w.written_bytes,
		       (unsigned long long)w.checked_bytes,
		       (unsigned long long)((now_ns() - start_ns) / 1000000ull));
		print_app(&a);
		printf("\n");
		next_ns += TICK_NS;
		/* After a pause (migration, throttling) the writer does not try to
		 * catch up; the server's requests, scheduled in advance, do queue. */
		if (now_ns() > next_ns + TICK_NS)
			next_ns = now_ns();
		if (a.kind == APP_NONE)
			sleep_until(next_ns);
		else
			run_app(&a, next_ns);
	}
}
