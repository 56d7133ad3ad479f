-- Forward auth for HAProxy 2.6 or later, with its built-in HTTP client:
-- before a request goes on, ask the session service about it.
--
--     lua-load /etc/haproxy/session_auth.lua
--     http-request lua.session_auth 127.0.0.1:8080
--
-- On 200 the request goes on with the identity headers of the answer and
-- the variable txn.session_checked set. Any other answer goes back to the
-- client: its status, challenge and body. HAProxy lets a request go on when
-- a Lua action fails, so the configuration refuses every request without
-- txn.session_checked.

-- The headers the application trusts: only ever set from the answer.
local identity = { "x-session-id", "x-account-id" }
-- The headers the service reads a token from.
local credentials = { "authorization", "cookie", "x-session-token" }
-- The headers of a refusal that reach the client.
local refusal = { "www-authenticate", "retry-after", "content-type", "cache-control" }
-- How long the service may take to answer, in milliseconds.
local timeout = 1000

-- A header's values as a list: HAProxy numbers them from 0.
local function list(values)
    local out = {}
    local i = 0
    while values[i] ~= nil do
        out[#out + 1] = values[i]
        i = i + 1
    end
    return out
end

-- A header name as CGI, WSGI, Rack and PHP read it: X_Session_Id is
-- X-Session-Id to them.
local function spelling(name)
    return (name:lower():gsub("_", "-"))
end

local function session_auth(txn, service)
    local http = txn.http
    local request = http:req_get_headers()
    for name in pairs(request) do
        for _, trusted in ipairs(identity) do
            if spelling(name) == trusted then
                http:req_del_header(name)
            end
        end
    end

    local presented = {}
    for _, name in ipairs(credentials) do
        if request[name] then
            presented[name] = list(request[name])
        end
    end
    local answer = core.httpclient():get{
        url = "http://" .. service .. "/v1/forward-auth",
        headers = presented,
        timeout = timeout,
    }

    if answer.status == 200 then
        for _, name in ipairs(identity) do
            local values = answer.headers[name]
            if values == nil or values[0] == nil then
                -- The service names its headers otherwise: refuse, never
                -- let a request through without its identity.
                txn:done{ status = 500 }
                return
            end
            http:req_set_header(name, values[0])
        end
        txn:set_var("txn.session_checked", true)
        return
    end

    -- A refusal (401), a service that cannot check now (503), or no
    -- service at all (HAProxy's own 503 or 504): never let it through. An
    -- answer that is no error, yet not 200, is none the service gives.
    local status = answer.status
    if status == nil or status < 400 then
        status = 502
    end
    local headers = {}
    for _, name in ipairs(refusal) do
        if answer.headers[name] then
            headers[name] = list(answer.headers[name])
        end
    end
    txn:done{ status = status, headers = headers, body = answer.body }
end

core.register_action("session_auth", { "http-req" }, session_auth, 1)
