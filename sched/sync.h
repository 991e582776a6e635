/* Private to libgreen. */
/*
 * What the blocking primitives share across files: a mutex's halves for
 * the condition variable (mutex.c, cond.c), a channel's for select (chan.c,
 * select.c).
 */
#ifndef GREEN_SYNC_H
#define GREEN_SYNC_H

#include "park.h"

/* mutex.c */
bool green__mutex_owned(green_mutex_t *m, struct green__thread *self);
/* For dumps: the id of the green thread holding m, 0 if none. */
uint64_t green__mutex_holder(const green_mutex_t *m);
/* green_mutex_unlock without the safepoint poll of green__enter. */
int green__mutex_unlock(struct green__worker *w, struct green__thread *self, green_mutex_t *m);

/* chan.c: a channel, and its two halves for select.c.  Under c->lock,
 * try to send / receive without blocking: 0 (done; *wake, if set, must be
 * made runnable once the lock is released), EPIPE (closed), or EAGAIN. */
struct green_chan {
    green__spin_t lock;
    bool closed;
    size_t esz, cap;                 /* element size, capacity: fixed */
    size_t len, head;                /* buffered values, oldest at head */
    struct green__wq recvq, sendq;   /* blocked receivers / senders */
    unsigned char *buf;              /* cap * esz bytes */
};
int green__chan_send_locked(green_chan_t *c, const void *elem, struct green__thread **wake);
int green__chan_recv_locked(green_chan_t *c, void *elem, struct green__thread **wake);

#endif /* GREEN_SYNC_H */
