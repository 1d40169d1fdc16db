import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

/** An error answered by the Pitwall server extension, with the cell it is about. */
export class PitwallError extends Error {
  constructor(
    message: string,
    readonly status: number,
    readonly cell: number | null = null
  ) {
    super(message);
  }
}

/** Call the Pitwall server extension (`<base>/pitwall/<endpoint>`); JSON in, JSON out. */
export async function requestAPI<T>(endpoint: string, init: RequestInit = {}): Promise<T> {
  const settings = ServerConnection.makeSettings();
  const url = URLExt.join(settings.baseUrl, 'pitwall', endpoint);
  let response: Response;
  try {
    response = await ServerConnection.makeRequest(url, init, settings);
  } catch (error) {
    throw new ServerConnection.NetworkError(error as TypeError);
  }
  const text = await response.text();
  let data: any = text;
  if (text.length > 0) {
    try {
      data = JSON.parse(text);
    } catch {
      // not JSON: keep the text, it is shown as the message
    }
  }
  if (!response.ok) {
    const message = typeof data === 'object' && data ? data.message ?? text : text;
    const cell = typeof data === 'object' && data && typeof data.cell === 'number' ? data.cell : null;
    throw new PitwallError(String(message), response.status, cell);
  }
  return data as T;
}

/** The base URL of the extension's routes, for links opened in a new tab. */
export function pitwallUrl(endpoint: string): string {
  return URLExt.join(ServerConnection.makeSettings().baseUrl, 'pitwall', endpoint);
}

/**
 * Open the extension's events WebSocket of a job (`<base>/pitwall/events/<id>?after=<seq>`).
 * The browser authenticates to Jupyter only (its cookie, or Jupyter's own token when the
 * settings say to append it); the server extension talks to the Backtest API.
 */
export function openEvents(id: string, after: number): WebSocket {
  const settings = ServerConnection.makeSettings();
  let url = URLExt.join(settings.wsUrl, 'pitwall', 'events', encodeURIComponent(id)) + `?after=${after}`;
  if (settings.appendToken && settings.token) {
    url += `&token=${encodeURIComponent(settings.token)}`;
  }
  return new settings.WebSocket(url);
}
