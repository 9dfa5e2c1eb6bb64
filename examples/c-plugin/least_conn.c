// Least connections, written in C: each request goes to the eligible backend
// with the fewest requests in flight (relative to its weight unless
// `weighted=false`); equally loaded backends take turns.
//
// The same policy as the Rust built-in `least-conn` and the Python and
// JavaScript examples, so the four can be compared request for request (see
// the README's cost table). Like the built-in, a pick does not scan the pool:
// the eligible backends sit in a binary min-heap ordered by load, then by how
// long ago each was picked, so a pick, an outcome and an eligibility change
// each cost O(log n), and the backends are found by id in a hash table.
//
// Parameters: `weighted` (true/false, default true). Unknown keys are
// rejected, as the contract asks, so an operator's typo does not go unnoticed.
//
// Built by build.sh: clang for wasm32-wasi against Debian's wasi-libc, with
// the bindings `veer-c-component bindings` generates from wit/picker.wit
// (picker.h, picker.c, picker_component_type.o), then wrapped into a
// component by `veer-c-component componentize`.
//
// Ownership follows wit-bindgen's C convention: an exported function owns
// its arguments and frees them; what it returns (strings, lists) it
// allocates with malloc, and the bindings free it after the host copied it.

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "picker.h"

typedef struct backend {
    uint32_t id;
    uint32_t weight;
    uint32_t in_flight;
    // Value of `turns` when this backend was last picked: among equally
    // loaded backends the one picked longest ago goes first.
    uint64_t last_turn;
    // Index in `heap`, or -1 while the backend is ineligible.
    int32_t heap_index;
} backend_t;

// --- the backends, by id: open addressing, linear probing -----------------

static backend_t **slots;     // NULL marks an empty slot
static size_t slot_count;     // a power of two, or 0
static size_t backend_count;

static size_t slot_of(uint32_t id) { return (size_t)(id * 2654435769u) & (slot_count - 1); }

static backend_t *find(uint32_t id) {
    if (slot_count == 0) return NULL;
    for (size_t i = slot_of(id);; i = (i + 1) & (slot_count - 1)) {
        if (slots[i] == NULL) return NULL;
        if (slots[i]->id == id) return slots[i];
    }
}

static void *checked(void *p) {
    // Out of memory inside the sandbox: trap. The host counts a fault, serves
    // the request with its own choice and starts a fresh instance.
    if (p == NULL) abort();
    return p;
}

static void insert_slot(backend_t *b) {
    size_t i = slot_of(b->id);
    while (slots[i] != NULL) i = (i + 1) & (slot_count - 1);
    slots[i] = b;
}

static void put(backend_t *b) {
    if ((backend_count + 1) * 2 > slot_count) {  // keep the table at most half full
        backend_t **old = slots;
        size_t old_count = slot_count;
        slot_count = old_count ? old_count * 2 : 16;
        slots = checked(calloc(slot_count, sizeof *slots));
        for (size_t i = 0; i < old_count; i++)
            if (old[i] != NULL) insert_slot(old[i]);
        free(old);
    }
    insert_slot(b);
    backend_count++;
}

static void take(uint32_t id) {
    if (slot_count == 0) return;
    size_t i = slot_of(id);
    while (slots[i] != NULL && slots[i]->id != id) i = (i + 1) & (slot_count - 1);
    if (slots[i] == NULL) return;
    slots[i] = NULL;
    backend_count--;
    // Backward-shift deletion: move every later member of the probe run
    // whose home slot is not between the hole and itself into the hole.
    for (size_t j = (i + 1) & (slot_count - 1); slots[j] != NULL; j = (j + 1) & (slot_count - 1)) {
        size_t home = slot_of(slots[j]->id);
        bool stays = (i <= j) ? (i < home && home <= j) : (i < home || home <= j);
        if (!stays) {
            slots[i] = slots[j];
            slots[j] = NULL;
            i = j;
        }
    }
}

// --- the eligible backends: a binary min-heap ------------------------------

static backend_t **heap;
static size_t heap_len, heap_cap;
static bool weighted = true;
static uint64_t turns;

// Is `a` the better choice than `b`? (in_flight + 1) / weight, compared by
// cross-multiplying so no division rounds two loads together.
static bool better(const backend_t *a, const backend_t *b) {
    uint64_t load_a = (uint64_t)(a->in_flight + 1) * (weighted ? b->weight : 1);
    uint64_t load_b = (uint64_t)(b->in_flight + 1) * (weighted ? a->weight : 1);
    if (load_a != load_b) return load_a < load_b;
    return a->last_turn < b->last_turn;
}

static void place(size_t i, backend_t *b) {
    heap[i] = b;
    b->heap_index = (int32_t)i;
}

static void sift_up(size_t i) {
    backend_t *b = heap[i];
    while (i > 0 && better(b, heap[(i - 1) / 2])) {
        place(i, heap[(i - 1) / 2]);
        i = (i - 1) / 2;
    }
    place(i, b);
}

static void sift_down(size_t i) {
    backend_t *b = heap[i];
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= heap_len) break;
        if (child + 1 < heap_len && better(heap[child + 1], heap[child])) child++;
        if (!better(heap[child], b)) break;
        place(i, heap[child]);
        i = child;
    }
    place(i, b);
}

static void reorder(backend_t *b) {
    sift_up((size_t)b->heap_index);
    sift_down((size_t)b->heap_index);
}

static void heap_add(backend_t *b) {
    if (b->heap_index >= 0) return;
    if (heap_len == heap_cap) {
        heap_cap = heap_cap ? heap_cap * 2 : 16;
        heap = checked(realloc(heap, heap_cap * sizeof *heap));
    }
    place(heap_len++, b);
    sift_up(heap_len - 1);
}

static void heap_remove(backend_t *b) {
    if (b->heap_index < 0) return;
    size_t i = (size_t)b->heap_index;
    b->heap_index = -1;
    backend_t *last = heap[--heap_len];
    if (i < heap_len) {
        place(i, last);
        reorder(last);
    }
}

static void forget(uint32_t id) {
    backend_t *b = find(id);
    if (b == NULL) return;
    heap_remove(b);
    take(id);
    free(b);
}

// --- the policy export -------------------------------------------------------

void exports_veer_picker_policy_info(exports_veer_picker_policy_plugin_info_t *ret) {
    picker_string_dup(&ret->name, "least-conn-c");
    picker_string_dup(&ret->version, "0.1.0");
    ret->feedback = VEER_PICKER_TYPES_FEEDBACK_OUTCOMES;
}

static bool equals(const picker_string_t *s, const char *text) {
    size_t n = strlen(text);
    return s->len == n && memcmp(s->ptr, text, n) == 0;
}

bool exports_veer_picker_policy_configure(picker_list_tuple2_string_string_t *params, picker_string_t *err) {
    // Validate everything, report every problem at once, then apply: a
    // rejected configure leaves the plugin as it was.
    char problems[512] = "";
    size_t used = 0;
    bool next_weighted = true;
    for (size_t i = 0; i < params->len; i++) {
        const picker_string_t *key = &params->ptr[i].f0, *value = &params->ptr[i].f1;
        int wrote = 0;
        if (equals(key, "weighted")) {
            if (equals(value, "true")) next_weighted = true;
            else if (equals(value, "false")) next_weighted = false;
            else
                wrote = snprintf(problems + used, sizeof problems - used, "%sweighted: expected true or false, got '%.*s'",
                                 used ? "; " : "", (int)(value->len > 64 ? 64 : value->len), value->ptr);
        } else {
            wrote = snprintf(problems + used, sizeof problems - used, "%sunknown parameter '%.*s' (known: weighted)",
                             used ? "; " : "", (int)(key->len > 64 ? 64 : key->len), key->ptr);
        }
        if (wrote > 0) used = (size_t)wrote + used < sizeof problems ? used + (size_t)wrote : sizeof problems - 1;
    }
    picker_list_tuple2_string_string_free(params);
    if (used > 0) {
        picker_string_dup(err, problems);
        return false;
    }
    if (next_weighted != weighted) {
        weighted = next_weighted;
        for (size_t i = heap_len / 2; i-- > 0;) sift_down(i);  // the order changed: heapify again
    }
    return true;
}

void exports_veer_picker_policy_backends_changed(exports_veer_picker_policy_list_backend_event_t *events) {
    for (size_t i = 0; i < events->len; i++) {
        const veer_picker_types_backend_event_t *event = &events->ptr[i];
        switch (event->tag) {
        case VEER_PICKER_TYPES_BACKEND_EVENT_ADDED: {
            // A re-added id is a new backend: it starts with a fresh record.
            forget(event->val.added.id);
            backend_t *b = checked(calloc(1, sizeof *b));
            b->id = event->val.added.id;
            b->weight = event->val.added.weight ? event->val.added.weight : 1;
            b->last_turn = turns;
            b->heap_index = -1;
            put(b);
            heap_add(b);
            break;
        }
        case VEER_PICKER_TYPES_BACKEND_EVENT_UPDATED: {
            backend_t *b = find(event->val.updated.id);
            if (b != NULL) {
                b->weight = event->val.updated.weight ? event->val.updated.weight : 1;
                if (b->heap_index >= 0) reorder(b);
            }
            break;
        }
        case VEER_PICKER_TYPES_BACKEND_EVENT_REMOVED:
            forget(event->val.removed);
            break;
        case VEER_PICKER_TYPES_BACKEND_EVENT_ELIGIBILITY: {
            backend_t *b = find(event->val.eligibility.f0);
            if (b == NULL) break;
            if (event->val.eligibility.f1) heap_add(b);
            else heap_remove(b);
            break;
        }
        }
    }
    exports_veer_picker_policy_list_backend_event_free(events);
}

bool exports_veer_picker_policy_pick(exports_veer_picker_policy_pick_context_t *ctx,
                                     exports_veer_picker_policy_backend_id_t *ret) {
    if (heap_len == 0) return false;
    backend_t *b = heap[0];
    if (ctx->exclude.is_some && b->id == ctx->exclude.val) {
        // The runner-up of a binary heap is one of the root's children.
        if (heap_len == 1) return false;
        b = heap[1];
        if (heap_len > 2 && better(heap[2], b)) b = heap[2];
    }
    b->in_flight++;
    b->last_turn = ++turns;
    sift_down((size_t)b->heap_index);
    *ret = b->id;
    return true;
}

void exports_veer_picker_policy_observe(exports_veer_picker_policy_outcome_t *outcome) {
    // Exactly one outcome per pick of ours (`picked`); the host's own fallback
    // choices were never counted, and late outcomes for removed backends
    // find nothing to decrement.
    if (!outcome->picked) return;
    backend_t *b = find(outcome->backend);
    if (b == NULL || b->in_flight == 0) return;
    b->in_flight--;
    if (b->heap_index >= 0) sift_up((size_t)b->heap_index);
}

void exports_veer_picker_policy_export_state(picker_list_u8_t *ret) {
    // In-flight counts belong to the instance that routed those requests
    // (their outcomes go back to it): nothing to hand over.
    ret->ptr = NULL;
    ret->len = 0;
}

bool exports_veer_picker_policy_import_state(picker_list_u8_t *state, picker_string_t *err) {
    size_t len = state->len;
    picker_list_u8_free(state);
    if (len == 0) return true;
    char message[96];
    snprintf(message, sizeof message, "least-conn-c keeps no state, got %zu bytes", len);
    picker_string_dup(err, message);
    return false;
}
