/* weir: a programmable HTTP proxy framework. Include this one header for the whole API. */
#ifndef WEIR_WEIR_H
#define WEIR_WEIR_H

#include "weir/buf.h"
#include "weir/cache.h"
#include "weir/config.h"
#include "weir/error.h"
#include "weir/http.h"
#include "weir/lb.h"
#include "weir/limits.h"
#include "weir/log.h"
#include "weir/loop.h"
#include "weir/mem.h"
#include "weir/peer.h"
#include "weir/proxy.h"
#include "weir/server.h"
#include "weir/tls.h"
#include "weir/version.h"

#endif
