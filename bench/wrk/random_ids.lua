-- wrk script: GET /promotions/{id} with ids drawn at random from the file
-- named by the IDS environment variable (one id per line).
local path = os.getenv("IDS") or "ids.txt"
local ids = {}
for line in io.lines(path) do ids[#ids + 1] = line end
if #ids == 0 then error("no ids in " .. path) end
math.randomseed(42)
request = function()
  return wrk.format("GET", "/promotions/" .. ids[math.random(#ids)])
end
