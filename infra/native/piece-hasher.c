/*
 * piece-hasher: the sha256 of each consecutive piece of a file, as hubshift's
 * manifests record them (src/core/checkpoint.ts), for a restore's
 * verification (src/images/native-hashing.ts).
 *
 *   piece-hasher [--no-lanes] PIECE_BYTES THREADS PATH
 *   piece-hasher --lanes
 *
 * Prints "size N", then "INDEX SHA256 BYTES" for each piece as it is done, in
 * any order; on failure a line on stderr and exit status 1. --no-lanes hashes
 * as on a CPU without AVX-512; --lanes prints how many pieces a thread hashes
 * at once on this CPU ("lanes 16", or "lanes 1").
 *
 * Why it exists: SHA-NI hashes one stream at 1.3-1.7 GB/s a core here, and a
 * restore verifies every byte of its image before criu runs (ARCHITECTURE,
 * invariant 3). A piece's sha256 is a chain of 64-byte blocks, but the
 * pieces are independent: on a CPU with AVX-512, each thread hashes 16 of
 * them at once, one in each 32-bit lane of the vector registers (3.3-3.6 GB/s
 * a core on this VM, 2026-12-03). Each lane reads its piece through its own
 * descriptor, so the kernel sees 16 sequential readers and reads ahead for
 * each. Pieces too few to fill the lanes, and every piece on a CPU without
 * AVX-512, go through OpenSSL (SHA-NI where the CPU has it).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <immintrin.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define LANES 16
/* Bytes a lane reads at a time: 16 lanes' worth stays in a core's L2 cache. */
#define CHUNK (64u << 10)
/* A batch fills at least this many lanes, or its pieces go through OpenSSL: one SHA-NI stream is worth ~5 lanes. */
#define MIN_LANES 8

static const uint32_t K[64] = {
	0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
	0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
	0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
	0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
	0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
	0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
	0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
	0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};
static const uint32_t H0[8] = { 0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19 };

static struct {
	const char *path;
	uint64_t size, piece, count, next, threads;
	int lanes;
	pthread_mutex_t lock;
	char error[512];
} job = { .lock = PTHREAD_MUTEX_INITIALIZER };

static void fail(const char *fmt, ...)
{
	va_list ap;
	pthread_mutex_lock(&job.lock);
	if (!job.error[0]) {
		va_start(ap, fmt);
		vsnprintf(job.error, sizeof(job.error), fmt, ap);
		va_end(ap);
	}
	pthread_mutex_unlock(&job.lock);
}

static int failed(void)
{
	pthread_mutex_lock(&job.lock);
	int f = job.error[0] != 0;
	pthread_mutex_unlock(&job.lock);
	return f;
}

/* Takes up to `want` pieces; returns how many, the first in *first. */
static uint64_t claim(uint64_t want, uint64_t *first)
{
	pthread_mutex_lock(&job.lock);
	uint64_t left = job.count - job.next, n = left < want ? left : want;
	*first = job.next;
	job.next += n;
	pthread_mutex_unlock(&job.lock);
	return n;
}

static uint64_t unclaimed(void)
{
	pthread_mutex_lock(&job.lock);
	uint64_t left = job.count - job.next;
	pthread_mutex_unlock(&job.lock);
	return left;
}

static void report(uint64_t index, const uint8_t digest[32], uint64_t bytes)
{
	char hex[65];
	for (int i = 0; i < 32; i++)
		sprintf(hex + 2 * i, "%02x", digest[i]);
	pthread_mutex_lock(&job.lock);
	printf("%llu %s %llu\n", (unsigned long long)index, hex, (unsigned long long)bytes);
	fflush(stdout);
	pthread_mutex_unlock(&job.lock);
}

/* Reads exactly n bytes at `at`, or fails saying where the file ended. */
static int read_exactly(int fd, uint8_t *buf, size_t n, uint64_t at)
{
	size_t got = 0;
	while (got < n) {
		ssize_t r = pread(fd, buf + got, n - got, at + got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			fail("reading %s at byte %llu: %s", job.path, (unsigned long long)(at + got), strerror(errno));
			return -1;
		}
		if (r == 0) {
			fail("the file ended at byte %llu of %llu: it shrank while it was read", (unsigned long long)(at + got), (unsigned long long)job.size);
			return -1;
		}
		got += r;
	}
	return 0;
}

static int piece_with_openssl(int fd, uint8_t *buf, uint64_t index)
{
	uint64_t start = index * job.piece, len = job.size - start < job.piece ? job.size - start : job.piece;
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	uint8_t digest[32];
	unsigned n;
	int ok = ctx && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
	for (uint64_t at = 0; ok && at < len;) {
		size_t take = len - at < CHUNK ? len - at : CHUNK;
		ok = read_exactly(fd, buf, take, start + at) == 0 && EVP_DigestUpdate(ctx, buf, take);
		at += take;
	}
	ok = ok && EVP_DigestFinal_ex(ctx, digest, &n);
	EVP_MD_CTX_free(ctx);
	if (!ok) {
		fail("hashing piece %llu of %s failed", (unsigned long long)index, job.path);
		return -1;
	}
	report(index, digest, len);
	return 0;
}

#define ROR(x, n) _mm512_ror_epi32(x, n)
#define XOR3(a, b, c) _mm512_ternarylogic_epi32(a, b, c, 0x96)
#define CH(e, f, g) _mm512_ternarylogic_epi32(e, f, g, 0xCA)
#define MAJ(a, b, c) _mm512_ternarylogic_epi32(a, b, c, 0xE8)

/*
 * One 64-byte block of each of 16 messages: lane l of s[i] holds word i of
 * message l's state. Lanes not in `live` are computed but left as they were.
 */
__attribute__((target("avx512f,avx512bw"))) static void compress16(__m512i s[8], const uint8_t *const p[LANES], __mmask16 live)
{
	__m512i r[16], t[16], u[16], w[16];
	/* Row l holds message l's 16 words; transposed, w[i] holds word i of every message. */
	for (int l = 0; l < 16; l++)
		r[l] = _mm512_loadu_si512(p[l]);
	for (int i = 0; i < 8; i++) {
		t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
		t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
	}
	for (int i = 0; i < 4; i++) {
		u[4 * i] = _mm512_unpacklo_epi64(t[4 * i], t[4 * i + 2]);
		u[4 * i + 1] = _mm512_unpackhi_epi64(t[4 * i], t[4 * i + 2]);
		u[4 * i + 2] = _mm512_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
		u[4 * i + 3] = _mm512_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
	}
	/* sha256's words are big-endian. */
	const __m512i bswap = _mm512_set_epi8(60, 61, 62, 63, 56, 57, 58, 59, 52, 53, 54, 55, 48, 49, 50, 51, 44, 45, 46, 47, 40, 41, 42, 43, 36, 37, 38, 39, 32, 33, 34, 35,
					      28, 29, 30, 31, 24, 25, 26, 27, 20, 21, 22, 23, 16, 17, 18, 19, 12, 13, 14, 15, 8, 9, 10, 11, 4, 5, 6, 7, 0, 1, 2, 3);
	for (int j = 0; j < 4; j++) {
		__m512i v0 = _mm512_shuffle_i32x4(u[j], u[4 + j], 0x44), v1 = _mm512_shuffle_i32x4(u[j], u[4 + j], 0xEE);
		__m512i v2 = _mm512_shuffle_i32x4(u[8 + j], u[12 + j], 0x44), v3 = _mm512_shuffle_i32x4(u[8 + j], u[12 + j], 0xEE);
		w[j] = _mm512_shuffle_epi8(_mm512_shuffle_i32x4(v0, v2, 0x88), bswap);
		w[4 + j] = _mm512_shuffle_epi8(_mm512_shuffle_i32x4(v0, v2, 0xDD), bswap);
		w[8 + j] = _mm512_shuffle_epi8(_mm512_shuffle_i32x4(v1, v3, 0x88), bswap);
		w[12 + j] = _mm512_shuffle_epi8(_mm512_shuffle_i32x4(v1, v3, 0xDD), bswap);
	}
	__m512i a = s[0], b = s[1], c = s[2], d = s[3], e = s[4], f = s[5], g = s[6], h = s[7];
#pragma GCC unroll 64
	for (int i = 0; i < 64; i++) {
		if (i >= 16) {
			__m512i w15 = w[(i - 15) & 15], w2 = w[(i - 2) & 15];
			__m512i s0 = XOR3(ROR(w15, 7), ROR(w15, 18), _mm512_srli_epi32(w15, 3));
			__m512i s1 = XOR3(ROR(w2, 17), ROR(w2, 19), _mm512_srli_epi32(w2, 10));
			w[i & 15] = _mm512_add_epi32(_mm512_add_epi32(w[i & 15], s0), _mm512_add_epi32(w[(i - 7) & 15], s1));
		}
		__m512i t1 = _mm512_add_epi32(_mm512_add_epi32(h, XOR3(ROR(e, 6), ROR(e, 11), ROR(e, 25))),
					      _mm512_add_epi32(CH(e, f, g), _mm512_add_epi32(w[i & 15], _mm512_set1_epi32(K[i]))));
		__m512i t2 = _mm512_add_epi32(XOR3(ROR(a, 2), ROR(a, 13), ROR(a, 22)), MAJ(a, b, c));
		h = g;
		g = f;
		f = e;
		e = _mm512_add_epi32(d, t1);
		d = c;
		c = b;
		b = a;
		a = _mm512_add_epi32(t1, t2);
	}
	__m512i out[8] = { a, b, c, d, e, f, g, h };
	for (int i = 0; i < 8; i++)
		s[i] = _mm512_mask_add_epi32(s[i], live, s[i], out[i]);
}

struct lane {
	int fd;
	uint8_t *buf; /* CHUNK bytes and room for the padding */
	uint64_t index, start, len, at;
	unsigned blocks;
	int last, done;
};

/* Pieces first..first+n-1 (n <= LANES), one a lane, front to back in lockstep. */
__attribute__((target("avx512f,avx512bw"))) static int pieces_in_lanes(struct lane *lanes, uint64_t first, unsigned n)
{
	static const uint8_t idle[64];
	__m512i s[8];
	for (int i = 0; i < 8; i++)
		s[i] = _mm512_set1_epi32(H0[i]);
	for (unsigned l = 0; l < n; l++) {
		struct lane *ln = &lanes[l];
		ln->index = first + l;
		ln->start = ln->index * job.piece;
		ln->len = job.size - ln->start < job.piece ? job.size - ln->start : job.piece;
		ln->at = 0;
		ln->last = ln->done = 0;
		/* Doubles the readahead of each lane's descriptor (WILLNEED for the whole batch was slower cold here). */
		posix_fadvise(ln->fd, ln->start, ln->len, POSIX_FADV_SEQUENTIAL);
	}
	for (unsigned finished = 0; finished < n;) {
		unsigned most = 0;
		for (unsigned l = 0; l < n; l++) {
			struct lane *ln = &lanes[l];
			ln->blocks = 0;
			if (ln->done)
				continue;
			size_t take = ln->len - ln->at < CHUNK ? ln->len - ln->at : CHUNK, bytes = take;
			if (read_exactly(ln->fd, ln->buf, take, ln->start + ln->at) < 0)
				return -1;
			ln->at += take;
			if (ln->at == ln->len) {
				/* The message ends here: 0x80, zeros, and its length in bits, big-endian, to a whole block. */
				uint64_t bits = ln->len * 8;
				ln->buf[bytes++] = 0x80;
				while (bytes % 64 != 56)
					ln->buf[bytes++] = 0;
				for (int k = 7; k >= 0; k--)
					ln->buf[bytes++] = (uint8_t)(bits >> (8 * k));
				ln->last = 1;
			}
			ln->blocks = bytes / 64;
			if (ln->blocks > most)
				most = ln->blocks;
		}
		const uint8_t *p[LANES];
		for (unsigned b = 0; b < most; b++) {
			__mmask16 live = 0;
			for (unsigned l = 0; l < LANES; l++) {
				int on = l < n && b < lanes[l].blocks;
				p[l] = on ? lanes[l].buf + 64 * b : idle;
				live |= (__mmask16)(on << l);
			}
			compress16(s, p, live);
		}
		uint32_t words[8][LANES];
		for (int i = 0; i < 8; i++)
			_mm512_storeu_si512(words[i], s[i]);
		for (unsigned l = 0; l < n; l++) {
			struct lane *ln = &lanes[l];
			if (!ln->last || ln->done)
				continue;
			uint8_t digest[32];
			for (int i = 0; i < 8; i++)
				for (int k = 0; k < 4; k++)
					digest[4 * i + k] = (uint8_t)(words[i][l] >> (24 - 8 * k));
			report(ln->index, digest, ln->len);
			ln->done = 1;
			finished++;
		}
		if (failed())
			return -1;
	}
	return 0;
}

static void *work(void *arg)
{
	(void)arg;
	struct lane lanes[LANES];
	unsigned opened = 0;
	uint8_t *buf = NULL;
	if (job.lanes) {
		for (; opened < LANES; opened++) {
			lanes[opened].fd = open(job.path, O_RDONLY | O_CLOEXEC);
			if (lanes[opened].fd < 0) {
				fail("opening %s: %s", job.path, strerror(errno));
				goto out;
			}
			lanes[opened].buf = aligned_alloc(64, CHUNK + 128);
			if (!lanes[opened].buf) {
				fail("hashing %s: out of memory", job.path);
				close(lanes[opened].fd);
				goto out;
			}
		}
	}
	int fd = open(job.path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		fail("opening %s: %s", job.path, strerror(errno));
		goto out;
	}
	buf = malloc(CHUNK);
	if (!buf) {
		fail("hashing %s: out of memory", job.path);
		close(fd);
		goto out;
	}
	while (!failed()) {
		uint64_t first;
		uint64_t left = unclaimed();
		if (job.lanes && left >= MIN_LANES * job.threads) {
			/* Shared out so that the threads end together: the last batches would otherwise leave lanes empty. */
			uint64_t share = (left + job.threads - 1) / job.threads;
			uint64_t n = claim(share < LANES ? share : LANES, &first);
			if (n >= MIN_LANES) {
				if (pieces_in_lanes(lanes, first, (unsigned)n) < 0)
					break;
				continue;
			}
			/* Another thread took the rest meanwhile: these few go one by one. */
			for (uint64_t i = 0; i < n; i++)
				if (piece_with_openssl(fd, buf, first + i) < 0)
					break;
			continue;
		}
		if (claim(1, &first) == 0)
			break;
		if (piece_with_openssl(fd, buf, first) < 0)
			break;
	}
	close(fd);
out:
	free(buf);
	for (unsigned l = 0; l < opened; l++) {
		close(lanes[l].fd);
		free(lanes[l].buf);
	}
	return NULL;
}

static int number(const char *s, unsigned long long *out)
{
	char *end;
	errno = 0;
	*out = strtoull(s, &end, 10);
	return errno || !*s || *end ? -1 : 0;
}

static int cpu_has_lanes(void)
{
	__builtin_cpu_init();
	return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw");
}

int main(int argc, char **argv)
{
	int lanes = 1, arg = 1;
	if (argc == 2 && !strcmp(argv[1], "--lanes")) {
		printf("lanes %d\n", cpu_has_lanes() ? LANES : 1);
		return 0;
	}
	if (argc > 1 && !strcmp(argv[1], "--no-lanes")) {
		lanes = 0;
		arg++;
	}
	unsigned long long piece, threads;
	if (argc - arg != 3 || number(argv[arg], &piece) || piece == 0 || number(argv[arg + 1], &threads) || threads == 0 || threads > 64) {
		fprintf(stderr, "usage: piece-hasher [--no-lanes] PIECE_BYTES THREADS PATH | piece-hasher --lanes\n");
		return 2;
	}
	job.path = argv[arg + 2];
	job.piece = piece;
	job.threads = threads;
	job.lanes = lanes && cpu_has_lanes();
	struct stat st;
	if (stat(job.path, &st) < 0) {
		fprintf(stderr, "cannot hash %s: %s\n", job.path, strerror(errno));
		return 1;
	}
	job.size = st.st_size;
	/* An empty file is one piece of nothing, as hubshift's other hashers say. */
	job.count = job.size == 0 ? 1 : (job.size + piece - 1) / piece;
	printf("size %llu\n", (unsigned long long)job.size);
	fflush(stdout);
	pthread_t t[64];
	unsigned started = 0;
	for (; started < threads; started++)
		if (pthread_create(&t[started], NULL, work, NULL)) {
			fail("cannot start a thread: %s", strerror(errno));
			break;
		}
	for (unsigned i = 0; i < started; i++)
		pthread_join(t[i], NULL);
	if (job.error[0]) {
		fprintf(stderr, "%s\n", job.error);
		return 1;
	}
	return 0;
}
