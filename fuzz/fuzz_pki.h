/*
 * Certificates for fuzz targets, made with OpenSSL at start-up (no files in the corpus): a
 * self-signed P-256 certificate for a subjectAltName, written as PEM. Header-only, so each
 * target that needs one includes it (fuzz_tls_hello, fuzz_config).
 */
#ifndef WEIR_FUZZ_PKI_H
#define WEIR_FUZZ_PKI_H

#include <stdbool.h>
#include <stdio.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

static inline void weir_fuzz_trap_if(bool cond)
{
    if (cond) {
        __builtin_trap();
    }
}

/* Writes a self-signed certificate for san (valid from an hour ago for a year) to cf and its
   key to kf, then closes both. */
static inline void weir_fuzz_write_cert(const char *san, FILE *cf, FILE *kf)
{
    EVP_PKEY *key = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    weir_fuzz_trap_if(key == NULL || x == NULL || cf == NULL || kf == NULL);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), -3600);
    X509_gmtime_adj(X509_getm_notAfter(x), 86400L * 365);
    X509_set_pubkey(x, key);
    X509_NAME *n = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)"fuzz", -1, -1, 0);
    X509_set_issuer_name(x, n);
    X509V3_CTX v3;
    X509V3_set_ctx_nodb(&v3);
    X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &v3, NID_subject_alt_name, san);
    weir_fuzz_trap_if(ext == NULL || X509_add_ext(x, ext, -1) != 1);
    X509_EXTENSION_free(ext);
    weir_fuzz_trap_if(X509_sign(x, key, EVP_sha256()) == 0);
    weir_fuzz_trap_if(PEM_write_X509(cf, x) != 1 ||
                      PEM_write_PrivateKey(kf, key, NULL, NULL, 0, NULL, NULL) != 1);
    weir_fuzz_trap_if(fclose(cf) != 0 || fclose(kf) != 0);
    X509_free(x);
    EVP_PKEY_free(key);
}

#endif
