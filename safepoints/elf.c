/*
 * Named sections of a loaded object, read from its file and kept while the
 * object stays loaded.
 *
 * GREEN_NOPREEMPT (green.h) places a function in the section
 * "green_nopreempt"; a statically linked libgreen keeps its own code in
 * "green_runtime".  Section headers are not loaded into memory, so the table
 * reads them from the object's file: the ELF header, the section header
 * table, and the section-name string table -- three preads, once per object:
 * the result is kept by (bias, path) for as long as the object stays
 * loaded, and forgotten after the first build that no longer sees it.  The
 * caller (build.c) checks that what it finds lies inside the object's
 * executable segments, which also catches a file that changed on disk since
 * it was loaded.  The cache, like the builds that read it, lives under
 * refresh.c's lock.
 *
 * Rejected: finding the sections through the __start_/__stop_ symbols the
 * linker defines.  In an executable they are not in the dynamic symbol
 * table, and in a shared object only one of them would bind by name.
 */
#include "table.h"

#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <link.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#define MAX_SECTIONS 65536u
#define MAX_SHSTRTAB ((size_t)16 << 20)

static int read_at(int fd, void *buf, size_t len, off_t off)
{
    size_t done = 0;
    while (done < len) {
        ssize_t n = pread(fd, (char *)buf + done, len - done, off + (off_t)done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return n < 0 ? errno : EIO;
        done += (size_t)n;
    }
    return 0;
}

/* The section headers and their names, or an errno. */
static int read_headers(int fd, ElfW(Shdr) **shdr, size_t *nsh, char **names, size_t *names_len)
{
    ElfW(Ehdr) eh;
    int err = read_at(fd, &eh, sizeof eh, 0);
    if (err)
        return err;
    if (memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0 || eh.e_ident[EI_CLASS] != ELFCLASS64 ||
        eh.e_shentsize != sizeof(ElfW(Shdr)) || eh.e_shoff == 0)
        return ENOEXEC;
    ElfW(Shdr) first;
    if ((err = read_at(fd, &first, sizeof first, (off_t)eh.e_shoff)) != 0)
        return err;
    /* Extended numbering: the real counts live in section 0. */
    size_t n = eh.e_shnum ? eh.e_shnum : first.sh_size;
    size_t strndx = eh.e_shstrndx == SHN_XINDEX ? first.sh_link : eh.e_shstrndx;
    if (n == 0 || n > MAX_SECTIONS || strndx >= n)
        return ENOEXEC;
    ElfW(Shdr) *sh = malloc(n * sizeof *sh);
    if (!sh)
        return ENOMEM;
    if ((err = read_at(fd, sh, n * sizeof *sh, (off_t)eh.e_shoff)) != 0) {
        free(sh);
        return err;
    }
    size_t len = sh[strndx].sh_size;
    char *str = len && len <= MAX_SHSTRTAB ? malloc(len + 1) : NULL;
    if (!str || (err = read_at(fd, str, len, (off_t)sh[strndx].sh_offset)) != 0) {
        free(sh);
        free(str);
        return str ? err : ENOEXEC;
    }
    str[len] = '\0';
    *shdr = sh;
    *nsh = n;
    *names = str;
    *names_len = len;
    return 0;
}

/* The sections green_nopreempt and green_runtime in the file at path (an
 * ELF object loaded at bias base); zero-length results mean absent.  0, or
 * an errno if the file cannot be read as ELF. */
static int sections_from_file(const char *path, uintptr_t base, struct green__sp_sections *out)
{
    memset(out, 0, sizeof *out);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno;
    ElfW(Shdr) *sh;
    size_t n, len;
    char *names;
    int err = read_headers(fd, &sh, &n, &names, &len);
    syscall(SYS_close, fd);      /* not close(): the LD_PRELOAD shim interposes it */
    if (err)
        return err;
    for (size_t i = 1; i < n; i++) {
        if (sh[i].sh_name >= len || !(sh[i].sh_flags & SHF_EXECINSTR) || sh[i].sh_size == 0)
            continue;
        const char *name = names + sh[i].sh_name;
        uintptr_t lo = base + sh[i].sh_addr, hi = lo + sh[i].sh_size;
        if (strcmp(name, "green_nopreempt") == 0) {
            out->nopreempt_lo = lo;
            out->nopreempt_hi = hi;
        } else if (strcmp(name, "green_runtime") == 0) {
            out->runtime_lo = lo;
            out->runtime_hi = hi;
        }
    }
    free(sh);
    free(names);
    return 0;
}

/* ---- Kept while loaded ---------------------------------------------------- */

/* Sections found in objects' files, by (bias, path); kept while loaded. */
struct objsec {
    uintptr_t base;
    char *path;
    struct green__sp_sections s;
    bool seen;
};
static struct objsec *cache;
static size_t ncache, capcache;

/* Requires: lock held. */
const struct green__sp_sections *green__sp_sections_of(uintptr_t base, const char *path)
{
    for (size_t i = 0; i < ncache; i++)
        if (cache[i].base == base && strcmp(cache[i].path, path) == 0) {
            cache[i].seen = true;
            return &cache[i].s;
        }
    char *copy = strdup(path);
    if (!copy || !green__sp_grow(&cache, &capcache, ncache + 1, sizeof *cache)) {
        free(copy);
        return NULL;
    }
    struct objsec *c = &cache[ncache++];
    *c = (struct objsec){ .base = base, .path = copy, .seen = true };
    /* An unreadable file has no sections we can know of. */
    sections_from_file(copy, base, &c->s);
    return &c->s;
}

/* Requires: lock held. */
void green__sp_sections_forget_unseen(void)
{
    size_t k = 0;
    for (size_t i = 0; i < ncache; i++) {
        if (cache[i].seen) {
            cache[i].seen = false;
            cache[k++] = cache[i];
        } else {
            free(cache[i].path);
        }
    }
    ncache = k;
}
