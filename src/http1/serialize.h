/* Writing HTTP/1.1 heads into a caller buffer. */
#ifndef WEIR_HTTP1_SERIALIZE_H
#define WEIR_HTTP1_SERIALIZE_H

#include "http/head.h"

/** Bytes weir__h1_write_request would write. */
size_t weir__h1_request_size(const struct weir_req *req);

/** Writes "METHOD target HTTP/1.1", the fields and the blank line. Bytes written, 0 if cap is
 * short. */
size_t weir__h1_write_request(const struct weir_req *req, char *out, size_t cap);

/** Bytes weir__h1_write_response would write. */
size_t weir__h1_response_size(const struct weir_resp *resp);

/** Writes "HTTP/1.1 status reason", the fields and the blank line. 0 if cap is short. */
size_t weir__h1_write_response(const struct weir_resp *resp, char *out, size_t cap);

#endif
