// CRC32C (Castagnoli, reflected polynomial 0x82F63B78), as used by iSCSI (RFC 3720) and ext4.
// tern_crc32c picks the SSE4.2 `crc32` instruction when the CPU has it; the table version is the
// fallback and the reference the tests compare against. Convention: start with crc = 0, feed
// chunks by passing the previous result back in (the pre/post inversion is internal).
#include "CTernIO.h"

#include <stdint.h>
#include <string.h>

static uint32_t table[256];
static int table_ready;

static void table_init(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        table[i] = c;
    }
    __atomic_store_n(&table_ready, 1, __ATOMIC_RELEASE);
}

uint32_t tern_crc32c_table(uint32_t crc, const void *data, size_t length) {
    if (!__atomic_load_n(&table_ready, __ATOMIC_ACQUIRE)) table_init();  // idempotent: same table
    const uint8_t *p = data;
    uint32_t c = ~crc;
    while (length--) c = table[(c ^ *p++) & 0xFF] ^ (c >> 8);
    return ~c;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) static uint32_t crc32c_sse42(uint32_t crc, const void *data, size_t length) {
    const uint8_t *p = data;
    uint64_t c = (uint32_t)~crc;
    while (length >= 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        c = __builtin_ia32_crc32di(c, v);
        p += 8;
        length -= 8;
    }
    uint32_t c32 = (uint32_t)c;
    while (length--) c32 = __builtin_ia32_crc32qi(c32, *p++);
    return ~c32;
}

int tern_crc32c_hardware(void) {
    static int cached = -1;
    int v = __atomic_load_n(&cached, __ATOMIC_RELAXED);
    if (v < 0) {
        __builtin_cpu_init();
        v = __builtin_cpu_supports("sse4.2") ? 1 : 0;
        __atomic_store_n(&cached, v, __ATOMIC_RELAXED);
    }
    return v;
}

uint32_t tern_crc32c(uint32_t crc, const void *data, size_t length) {
    return tern_crc32c_hardware() ? crc32c_sse42(crc, data, length) : tern_crc32c_table(crc, data, length);
}
#else
int tern_crc32c_hardware(void) { return 0; }
uint32_t tern_crc32c(uint32_t crc, const void *data, size_t length) { return tern_crc32c_table(crc, data, length); }
#endif
