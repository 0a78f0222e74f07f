declare module 'dicomweb-client' {
  export namespace api {
    interface ClientOptions {
      url: string;
      headers?: Record<string, string>;
      verbose?: boolean;
      requestHooks?: ((request: XMLHttpRequest, metadata: { method: string; url: string }) => XMLHttpRequest)[];
    }
    class DICOMwebClient {
      constructor(options: ClientOptions);
      searchForStudies(options?: { queryParams?: Record<string, string | string[]> }): Promise<Record<string, unknown>[]>;
      searchForSeries(options?: { studyInstanceUID?: string; queryParams?: Record<string, string | string[]> }): Promise<Record<string, unknown>[]>;
      searchForInstances(options: {
        studyInstanceUID?: string;
        seriesInstanceUID?: string;
        queryParams?: Record<string, string | string[]>;
      }): Promise<Record<string, unknown>[]>;
      retrieveSeriesMetadata(options: { studyInstanceUID: string; seriesInstanceUID: string }): Promise<Record<string, unknown>[]>;
      storeInstances(options: { datasets: ArrayBuffer[] }): Promise<unknown>;
    }
  }
}
