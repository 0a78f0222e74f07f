import { pacsAgents } from '../../dicomweb/http-get.js';

export { staleSocket } from '../../dicomweb/http-get.js';

/**
 * Keep-alive agents for the proxy's requests to the PACS (src/dicomweb/http-get.ts keeps Orthanc's short-lived
 * keep-alive sockets). A request that meets a socket the server closed meanwhile is sent again (GET and HEAD only,
 * see dicomweb-proxy.ts). Up to 32 concurrent requests per PACS host (viewers fetch frames in parallel); more wait
 * in the agent's queue.
 */
export const proxyAgents = pacsAgents(32);
