/* The weir server binary: config-driven routing and the demo origin, on the public API. */
#ifndef WEIR_APP_H
#define WEIR_APP_H

#include <weir/weir.h>

/**
 * The hooks of the config-driven proxy (routes, upstream groups, header edits). Their service
 * data is a router built for the server's configuration.
 */
extern const struct weir_proxy_hooks weir_app_router_hooks;

/** The load balancers of cfg's upstream groups. 0, WEIR_EINVAL (logged) or WEIR_ENOMEM. */
struct weir_app_router;
int weir_app_router_new(const struct weir_config *cfg, struct weir_app_router **out);
/** After the server has stopped. Accepts NULL. */
void weir_app_router_free(struct weir_app_router *r);
/** The health checker to run as a background service, or NULL when no group has one. */
/** The zone of cache.zones named zone (NULL: none). */
struct weir_cache *weir_app_router_cache(const struct weir_app_router *r, const char *zone);
struct weir_health *weir_app_router_health(const struct weir_app_router *r);
/** The DNS discovery to run as a background service before the proxy, or NULL when no backend
    is given by DNS name. */
struct weir_discovery *weir_app_router_discovery(const struct weir_app_router *r);

/** The built-in demo origin as a background service's callbacks; data is the address text. */
extern const struct weir_background_ops weir_app_demo_origin_ops;

#endif
