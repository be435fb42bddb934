// The /docs page's one script of our own: a file, not an inline script, so the page's
// Content-Security-Policy can say `script-src 'self'`. validatorUrl null: swagger-ui would otherwise
// load a badge from its public validator, a third-party request from a page that may hold credentials.
SwaggerUIBundle({ url: "/openapi.json", dom_id: "#swagger-ui", validatorUrl: null });
