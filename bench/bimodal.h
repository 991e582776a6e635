/* The bimodal table's wire format, shared by bench/bimodal_server.c and
 * bench/bimodal_load.c (bench/go/bench.go's bimodal_server reads the same
 * 16 bytes).  Host byte order: client and server run on one machine. */
#ifndef BIMODAL_H
#define BIMODAL_H

#include <stdint.h>

#define BIMODAL_MAGIC 0x62696d6fu        /* "bimo" */

/* A request, and its answer: the same 16 bytes sent back after the work. */
struct bimodal_msg {
    uint64_t id;                         /* the client's index of the request */
    uint32_t service_us;                 /* microseconds of work to do */
    uint32_t magic;                      /* BIMODAL_MAGIC */
};

_Static_assert(sizeof(struct bimodal_msg) == 16, "16 bytes on the wire");

#endif
