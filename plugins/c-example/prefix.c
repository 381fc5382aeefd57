/* x-c-prefix: a Warren exchange type written in C. A message goes to every
 * binding whose key is a prefix of its routing key ("sensors." catches
 * "sensors.room1.temp"). Build: cc -shared -fPIC -O2 -I ../../crates/warren-plugin/include prefix.c -o libwarren_c_prefix.so
 * Compile with -DWARREN_TEST_ABI=999 to get a library with a wrong ABI
 * version, or -DWARREN_TEST_NO_ENTRY to get one without the entry symbol
 * or -DWARREN_TEST_TYPE='"direct"' for one whose type clashes with a
 * built-in (all used by the loader tests). */
#include <stdlib.h>
#include <string.h>
#include "warren_plugin.h"

#ifndef WARREN_TEST_ABI
#define WARREN_TEST_ABI WARREN_ABI_VERSION
#endif
#ifndef WARREN_TEST_TYPE
#define WARREN_TEST_TYPE "x-c-prefix"
#endif

typedef struct { uint32_t id; size_t len; uint8_t *key; } binding;
typedef struct { binding *items; size_t count; size_t cap; } state;

static int32_t create(const warren_field *args, size_t n, void **out, warren_error *err) {
    (void)args; (void)n; (void)err;
    state *s = calloc(1, sizeof(state));
    if (!s) return WARREN_ERROR;
    *out = s;
    return WARREN_OK;
}

static void destroy(void *p) {
    state *s = p;
    for (size_t i = 0; i < s->count; i++) free(s->items[i].key);
    free(s->items);
    free(s);
}

static int32_t bind(void *p, uint32_t id, warren_str key, const warren_field *a, size_t n, warren_error *err) {
    (void)a; (void)n; (void)err;
    state *s = p;
    if (s->count == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 8;
        binding *b = realloc(s->items, cap * sizeof(binding));
        if (!b) return WARREN_ERROR;
        s->items = b;
        s->cap = cap;
    }
    uint8_t *k = malloc(key.len ? key.len : 1);
    if (!k) return WARREN_ERROR;
    memcpy(k, key.ptr, key.len);
    s->items[s->count++] = (binding){ id, key.len, k };
    return WARREN_OK;
}

static int32_t unbind(void *p, uint32_t id, warren_str key, const warren_field *a, size_t n, warren_error *err) {
    (void)key; (void)a; (void)n; (void)err;
    state *s = p;
    for (size_t i = 0; i < s->count; i++) {
        if (s->items[i].id == id) {
            free(s->items[i].key);
            s->items[i] = s->items[--s->count];
            break;
        }
    }
    return WARREN_OK;
}

static int32_t route(const void *p, const warren_message *m, uint32_t *out, size_t cap, size_t *len) {
    const state *s = p;
    size_t n = 0;
    for (size_t i = 0; i < s->count; i++) {
        const binding *b = &s->items[i];
        if (b->len <= m->routing_key.len && memcmp(b->key, m->routing_key.ptr, b->len) == 0) {
            if (n < cap) out[n] = b->id;
            n++;
        }
    }
    *len = n;
    return n > cap ? WARREN_BUFFER_TOO_SMALL : WARREN_OK;
}

static const warren_type_descriptor types[] = {
    { { (const uint8_t *)WARREN_TEST_TYPE, sizeof(WARREN_TEST_TYPE) - 1 }, 0, create, destroy, bind, unbind, route },
};

static const warren_plugin_descriptor descriptor = {
    WARREN_TEST_ABI,
    { (const uint8_t *)"c-prefix", 8 },
    { (const uint8_t *)"1.0", 3 },
    types,
    1,
};

#ifndef WARREN_TEST_NO_ENTRY
const warren_plugin_descriptor *warren_plugin_entry(void) { return &descriptor; }
#endif
