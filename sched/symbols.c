/*
 * The function around a code address, from its object's symbol table
 * (.symtab, so static and hidden functions are named; .dynsym when the
 * object was stripped).  Each object's file is mapped once per process and
 * stays mapped; a lookup is one scan of its symbols.  libunwind's
 * unw_get_proc_name maps and unmaps the whole file on every call, which
 * cost 0.5 ms a frame here -- too slow for a lock cycle reported while it
 * forms.  For dumps and cycle reports (dump_text.c); the caller serializes
 * (green__sym_lookup takes an OS mutex: call it where libgreen's
 * interposed locks are libc's, as dumps and reports do).
 */
#include "dump.h"

#include <dlfcn.h>
#include <elf.h>
#include <fcntl.h>
#include <link.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>

#define SYM_OBJS_MAX 256

struct symobj {
    uintptr_t bias;                  /* link map's l_addr */
    const Elf64_Sym *syms;
    size_t nsyms;
    const char *strs;
    size_t strsz;
    bool ok;
};

static pthread_mutex_t objs_lock = PTHREAD_MUTEX_INITIALIZER;
static struct symobj objs[SYM_OBJS_MAX];
static unsigned nobjs;

/* Map path and find its symbol table; false if it has none we can read. */
static bool load(struct symobj *o, const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    struct stat st;
    void *map = MAP_FAILED;
    if (fstat(fd, &st) == 0 && (size_t)st.st_size >= sizeof(Elf64_Ehdr))
        map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (map == MAP_FAILED)
        return false;
    size_t len = (size_t)st.st_size;
    const char *b = map;
    const Elf64_Ehdr *eh = map;
    if (memcmp(eh->e_ident, ELFMAG, SELFMAG) != 0 || eh->e_ident[EI_CLASS] != ELFCLASS64 ||
        eh->e_shentsize != sizeof(Elf64_Shdr) || eh->e_shoff > len ||
        (size_t)eh->e_shnum * sizeof(Elf64_Shdr) > len - eh->e_shoff)
        goto bad;
    const Elf64_Shdr *sh = (const Elf64_Shdr *)(const void *)(b + eh->e_shoff);
    const Elf64_Shdr *tab = NULL;
    for (unsigned pass = 0; pass < 2 && !tab; pass++)
        for (unsigned i = 0; i < eh->e_shnum && !tab; i++)
            if (sh[i].sh_type == (pass == 0 ? SHT_SYMTAB : SHT_DYNSYM))
                tab = &sh[i];
    if (!tab || tab->sh_link >= eh->e_shnum || tab->sh_offset > len ||
        tab->sh_size > len - tab->sh_offset)
        goto bad;
    const Elf64_Shdr *str = &sh[tab->sh_link];
    if (str->sh_offset > len || str->sh_size > len - str->sh_offset)
        goto bad;
    o->syms = (const Elf64_Sym *)(const void *)(b + tab->sh_offset);
    o->nsyms = tab->sh_size / sizeof(Elf64_Sym);
    o->strs = b + str->sh_offset;
    o->strsz = str->sh_size;
    return true;
bad:
    munmap(map, len);
    return false;
}

/* The object of pc, loaded the first time. */
static const struct symobj *object_of(uintptr_t pc)
{
    Dl_info di;
    struct link_map *lm = NULL;
    if (!dladdr1((void *)pc, &di, (void **)&lm, RTLD_DL_LINKMAP) || !lm)
        return NULL;
    for (unsigned i = 0; i < nobjs; i++)
        if (objs[i].bias == lm->l_addr)
            return objs[i].ok ? &objs[i] : NULL;
    if (nobjs == SYM_OBJS_MAX)
        return NULL;
    struct symobj *o = &objs[nobjs++];
    o->bias = lm->l_addr;
    /* The executable's link map has no name: its file is /proc/self/exe. */
    const char *path = lm->l_name && lm->l_name[0] ? lm->l_name : "/proc/self/exe";
    o->ok = load(o, path);
    return o->ok ? o : NULL;
}

bool green__sym_lookup(uintptr_t pc, char *name, size_t size, uintptr_t *off)
{
    green__os_mutex_lock(&objs_lock);
    const struct symobj *o = object_of(pc);
    const Elf64_Sym *best = NULL;
    if (o) {
        uint64_t a = pc - o->bias;
        for (size_t i = 0; i < o->nsyms; i++) {
            const Elf64_Sym *s = &o->syms[i];
            if (ELF64_ST_TYPE(s->st_info) != STT_FUNC || s->st_shndx == SHN_UNDEF ||
                s->st_value > a || s->st_name >= o->strsz)
                continue;
            if (a < s->st_value + (s->st_size ? s->st_size : 1)) {
                best = s;            /* contains it */
                break;
            }
            if (!s->st_size && (!best || s->st_value > best->st_value))
                best = s;            /* a label without a size, before it */
        }
        if (best) {
            *off = a - best->st_value;
            const char *n = o->strs + best->st_name;
            size_t k = strnlen(n, o->strsz - best->st_name);
            k = k < size - 1 ? k : size - 1;
            memcpy(name, n, k);
            name[k] = '\0';
        }
    }
    green__os_mutex_unlock(&objs_lock);
    return best != NULL;
}
