/* The weir server binary: config-driven routing and the demo origin, on the public API. */
#ifndef WEIR_APP_H
#define WEIR_APP_H

#include <weir/weir.h>

/** The hooks of the config-driven proxy (routes, upstream groups, header edits). */
extern const struct weir_proxy_hooks weir_app_router_hooks;

/** The built-in demo origin as a background service's callbacks; data is the address text. */
extern const struct weir_background_ops weir_app_demo_origin_ops;

#endif
