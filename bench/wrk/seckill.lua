-- wrk script: POST seckill orders as many distinct users, each request with a new request id.
-- TOKENS: file of user JWTs, one per line (bench mint-tokens). The URL's path is the endpoint.
local tokens = {}
local counter = 0
local thread_tag = ""

function setup(thread)
  thread:set("tag", tostring(math.random(1, 1000000000)))
end

function init(args)
  thread_tag = tag or "t"
  for line in io.lines(os.getenv("TOKENS")) do
    tokens[#tokens + 1] = line
  end
end

function request()
  counter = counter + 1
  local token = tokens[(counter % #tokens) + 1]
  local body = '{"quantity":1,"request_id":"' .. thread_tag .. "-" .. counter .. '"}'
  return wrk.format("POST", wrk.path, {
    ["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer " .. token,
  }, body)
end
