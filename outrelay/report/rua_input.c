/* rua_input.c - turns one rua file as receivers send it (plain XML, a .gz, or a .zip with one
 * XML member) into the XML bytes, never holding more than RUA_MAX_BYTES of input or output:
 * a gzip or zip bomb is refused as soon as its output passes the limit. Reads only the named
 * file, and only if it is a regular file (a FIFO or device is refused without blocking);
 * recognises the format by its magic bytes, not its name. Called by rua.c. */
#include "report/rua_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <zip.h>
#include <zlib.h>

#include "report/rua.h"

#define RUA_CHUNK 65536
/* A zip with more members than this is not a DMARC report attachment. */
#define RUA_ZIP_MAX_ENTRIES 64

static const char *rua_file_type(mode_t mode)
{
    if (S_ISDIR(mode)) return "a directory";
    if (S_ISFIFO(mode)) return "a FIFO";
    if (S_ISCHR(mode)) return "a character device";
    if (S_ISBLK(mode)) return "a block device";
    if (S_ISSOCK(mode)) return "a socket";
    return "not a file";
}

/* Opens path for reading only if it is a regular file. O_NONBLOCK keeps open() from waiting for
 * a writer on a FIFO (or for carrier on a device); the type is checked with fstat on the opened
 * descriptor, so there is no window between the check and the read. Blocking mode is restored
 * before reading. Returns the descriptor or -1 with err filled. */
static int rua_open_regular(const char *path, struct stat *st, char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0) {
        snprintf(err, errlen, "cannot open: %s", strerror(errno));
        return -1;
    }
    if (fstat(fd, st) != 0) {
        snprintf(err, errlen, "cannot stat: %s", strerror(errno));
        close(fd);
        return -1;
    }
    if (!S_ISREG(st->st_mode)) {
        snprintf(err, errlen, "not a regular file (%s); give the report file itself",
                 rua_file_type(st->st_mode));
        close(fd);
        return -1;
    }
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0 || fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) != 0) {
        snprintf(err, errlen, "fcntl: %s", strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

static int rua_read_all(const char *path, struct strbuf *raw, char *err, size_t errlen)
{
    struct stat st;
    int fd = rua_open_regular(path, &st, err, errlen);
    if (fd < 0) return -1;
    if ((uint64_t)st.st_size > RUA_MAX_BYTES) {
        snprintf(err, errlen, "file is %lld bytes, more than the %u MiB limit",
                 (long long)st.st_size, RUA_MAX_BYTES >> 20);
        close(fd);
        return -1;
    }
    for (;;) {
        strbuf_reserve(raw, RUA_CHUNK);
        ssize_t got = read(fd, raw->data + raw->len, RUA_CHUNK);
        if (got < 0 && errno == EINTR) continue;
        if (got < 0) {
            snprintf(err, errlen, "read error: %s", strerror(errno));
            close(fd);
            return -1;
        }
        if (got == 0) break;
        raw->len += (size_t)got;
        raw->data[raw->len] = '\0';
        if (raw->len > RUA_MAX_BYTES) { /* grew while we read it */
            snprintf(err, errlen, "file is more than the %u MiB limit", RUA_MAX_BYTES >> 20);
            close(fd);
            return -1;
        }
    }
    close(fd);
    return 0;
}

static void rua_too_big(char *err, size_t errlen, const char *what)
{
    snprintf(err, errlen,
             "%s decompresses to more than the %u MiB limit (refused as a possible "
             "decompression bomb)",
             what, RUA_MAX_BYTES >> 20);
}

/* gzip, possibly several members back to back (RFC 1952 allows it). */
static int rua_gunzip(const struct strbuf *raw, struct strbuf *xml, char *err, size_t errlen)
{
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    if (inflateInit2(&zs, 16 + MAX_WBITS) != Z_OK) {
        snprintf(err, errlen, "zlib: cannot initialise");
        return -1;
    }
    zs.next_in = (Bytef *)raw->data;
    zs.avail_in = (uInt)raw->len;
    int rc = -1;
    for (;;) {
        strbuf_reserve(xml, RUA_CHUNK);
        zs.next_out = (Bytef *)xml->data + xml->len;
        zs.avail_out = RUA_CHUNK;
        int z = inflate(&zs, Z_NO_FLUSH);
        xml->len += RUA_CHUNK - zs.avail_out;
        xml->data[xml->len] = '\0';
        if (xml->len > RUA_MAX_BYTES) {
            rua_too_big(err, errlen, "gzip data");
            break;
        }
        if (z == Z_STREAM_END) {
            if (zs.avail_in == 0) {
                rc = 0;
                break;
            }
            if (zs.avail_in >= 2 && zs.next_in[0] == 0x1f && zs.next_in[1] == 0x8b) {
                inflateReset(&zs); /* the next member */
                continue;
            }
            snprintf(err, errlen, "unexpected data after the end of the gzip stream");
            break;
        }
        if (z == Z_OK) continue;
        if (z == Z_BUF_ERROR && zs.avail_in == 0) {
            snprintf(err, errlen, "gzip data is truncated (ends before the end of the stream)");
            break;
        }
        snprintf(err, errlen, "corrupt gzip data: %s", zs.msg != NULL ? zs.msg : zError(z));
        break;
    }
    inflateEnd(&zs);
    return rc;
}

static int rua_is_xml_name(const char *name)
{
    size_t n = strlen(name);
    return n >= 4 && strcasecmp(name + n - 4, ".xml") == 0;
}

/* Picks the member to read: the only file, or the only *.xml file. */
static int rua_zip_pick(zip_t *za, zip_uint64_t *index, char *err, size_t errlen)
{
    zip_int64_t n = zip_get_num_entries(za, 0);
    if (n <= 0) {
        snprintf(err, errlen, "zip archive is empty");
        return -1;
    }
    if (n > RUA_ZIP_MAX_ENTRIES) {
        snprintf(err, errlen, "zip archive has %lld members; a report attachment has one",
                 (long long)n);
        return -1;
    }
    size_t files = 0, xmls = 0;
    zip_uint64_t any = 0, xml = 0;
    for (zip_uint64_t i = 0; i < (zip_uint64_t)n; i++) {
        const char *name = zip_get_name(za, i, 0);
        if (name == NULL || name[0] == '\0' || name[strlen(name) - 1] == '/') continue;
        files++;
        any = i;
        if (rua_is_xml_name(name)) {
            xmls++;
            xml = i;
        }
    }
    if (files == 1) {
        *index = any;
        return 0;
    }
    if (xmls == 1) {
        *index = xml;
        return 0;
    }
    snprintf(err, errlen, "zip archive has %zu files and %zu .xml files; expected one report",
             files, xmls);
    return -1;
}

static int rua_unzip(const struct strbuf *raw, struct strbuf *xml, char *err, size_t errlen)
{
    zip_error_t ze;
    zip_error_init(&ze);
    zip_source_t *src = zip_source_buffer_create(raw->data, raw->len, 0, &ze);
    if (src == NULL) {
        snprintf(err, errlen, "zip: %s", zip_error_strerror(&ze));
        zip_error_fini(&ze);
        return -1;
    }
    zip_t *za = zip_open_from_source(src, ZIP_RDONLY | ZIP_CHECKCONS, &ze);
    if (za == NULL) {
        snprintf(err, errlen, "not a readable zip archive: %s", zip_error_strerror(&ze));
        zip_source_free(src);
        zip_error_fini(&ze);
        return -1;
    }
    zip_error_fini(&ze);
    int rc = -1;
    zip_uint64_t index = 0;
    zip_file_t *zf = NULL;
    if (rua_zip_pick(za, &index, err, errlen) != 0) goto done;
    zf = zip_fopen_index(za, index, 0);
    if (zf == NULL) {
        snprintf(err, errlen, "zip member %s: %s", zip_get_name(za, index, 0), zip_strerror(za));
        goto done;
    }
    for (;;) {
        strbuf_reserve(xml, RUA_CHUNK);
        zip_int64_t got = zip_fread(zf, xml->data + xml->len, RUA_CHUNK);
        if (got < 0) {
            snprintf(err, errlen, "zip member %s: %s", zip_get_name(za, index, 0),
                     zip_file_strerror(zf));
            goto done;
        }
        if (got == 0) break;
        xml->len += (size_t)got;
        xml->data[xml->len] = '\0';
        if (xml->len > RUA_MAX_BYTES) {
            rua_too_big(err, errlen, "zip member");
            goto done;
        }
    }
    rc = 0;
done:
    if (zf != NULL) zip_fclose(zf);
    zip_discard(za); /* frees src too */
    return rc;
}

int rua_read_file(const char *path, struct strbuf *xml, char *err, size_t errlen)
{
    struct strbuf raw = STRBUF_INIT;
    int rc = rua_read_all(path, &raw, err, errlen);
    if (rc == 0) {
        const unsigned char *p = (const unsigned char *)raw.data;
        if (raw.len == 0) {
            snprintf(err, errlen, "file is empty");
            rc = -1;
        } else if (raw.len >= 2 && p[0] == 0x1f && p[1] == 0x8b) {
            rc = rua_gunzip(&raw, xml, err, errlen);
        } else if (raw.len >= 4 && memcmp(p, "PK\x03\x04", 4) == 0) {
            rc = rua_unzip(&raw, xml, err, errlen);
        } else if (raw.len >= 4 && memcmp(p, "PK\x05\x06", 4) == 0) {
            snprintf(err, errlen, "zip archive is empty");
            rc = -1;
        } else {
            strbuf_append(xml, raw.data, raw.len);
        }
    }
    strbuf_free(&raw);
    if (rc != 0) strbuf_reset(xml);
    return rc;
}
