/* Warren exchange-type plugin ABI, version 1. Mirrors crates/warren-plugin
 * (src/lib.rs); both are tested by building plugins/c-example and loading it
 * into a real broker. All memory stays with the side that allocated it. */
#ifndef WARREN_PLUGIN_H
#define WARREN_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#define WARREN_ABI_VERSION 1u

#define WARREN_OK 0
#define WARREN_ERROR 1
#define WARREN_BUFFER_TOO_SMALL 2

#define WARREN_KIND_STR 0
#define WARREN_KIND_INT 1
#define WARREN_KIND_BOOL 2
#define WARREN_KIND_FLOAT 3
#define WARREN_KIND_OTHER 4

#define WARREN_WANTS_HEADERS 1u
#define WARREN_WANTS_PROPERTIES 2u

typedef struct { const uint8_t *ptr; size_t len; } warren_str;

typedef struct {
    warren_str key;
    uint8_t kind;
    int64_t int_value;
    double float_value;
    warren_str bytes;
} warren_field;

typedef struct { uint8_t *ptr; size_t cap; size_t len; } warren_error;

typedef struct {
    warren_str routing_key;
    const warren_field *headers;
    size_t header_count;
    const warren_field *properties;
    size_t property_count;
    uint64_t body_len;
} warren_message;

typedef struct {
    warren_str type_name;
    uint32_t wants;
    int32_t (*create)(const warren_field *args, size_t arg_count, void **state, warren_error *err);
    void (*destroy)(void *state);
    int32_t (*bind)(void *state, uint32_t binding, warren_str key, const warren_field *args, size_t arg_count, warren_error *err);
    int32_t (*unbind)(void *state, uint32_t binding, warren_str key, const warren_field *args, size_t arg_count, warren_error *err);
    /* Called concurrently from many threads. */
    int32_t (*route)(const void *state, const warren_message *msg, uint32_t *out, size_t out_cap, size_t *out_len);
} warren_type_descriptor;

typedef struct {
    uint32_t abi_version;
    warren_str name;
    warren_str version;
    const warren_type_descriptor *types;
    size_t type_count;
} warren_plugin_descriptor;

/* Export this symbol. */
const warren_plugin_descriptor *warren_plugin_entry(void);

#endif
